"""Schema-evolution guard: stored samples of every event type and version decode forever.

Each file under samples/ is a payload exactly as the log stored it, named
`<tag>.v<schema_version>[.<variant>].json`. A sample is never edited or deleted: a change that
stops one decoding (a renamed field, a changed type, a reused tag) is a breaking change and
needs a new tag or an upcaster. Add samples for every new type or version.
"""

from pathlib import Path

import pytest

from dcp_events.codec import default_codec

SAMPLES = Path(__file__).parent / "samples"
FILES = sorted(SAMPLES.glob("*.json"))
CODEC = default_codec()


def _tag_and_version(path: Path) -> tuple[str, int]:
    parts = path.name.removesuffix(".json").split(".")
    i = next(i for i, p in enumerate(parts) if p.startswith("v") and p[1:].isdigit())
    return ".".join(parts[:i]), int(parts[i][1:])


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_sample_decodes(path: Path):
    """The stored payload decodes to its type; at the current version it re-encodes byte for
    byte, so field names and order have not drifted either."""
    tag, version = _tag_and_version(path)
    payload = path.read_bytes()
    event = CODEC.decode_payload(tag, version, payload)
    assert event.__struct_config__.tag == tag
    if version == type(event).schema_version:
        assert CODEC.encode(event).payload == payload


def test_every_event_type_has_a_sample():
    """No type of the catalogue is without a stored sample of its current version."""
    have = {_tag_and_version(p) for p in FILES}
    missing = [
        f"{tag} v{cls.schema_version}"
        for tag, cls in CODEC.types.items()
        if (tag, cls.schema_version) not in have
    ]
    assert not missing, f"add samples for {missing}"
