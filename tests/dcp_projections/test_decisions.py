"""Pure decisions and helpers: settings, IBANs, presence, allowlist patterns, matching."""

import pytest

from dcp_events import catalogue as ev
from dcp_projections import commands as c
from dcp_projections.decisions import decide, iban_is_valid
from dcp_projections.errors import ImageNotAllowed, NotFound, ValidationError
from dcp_projections.fold import apply
from dcp_projections.presence import presence, takes_new_jobs
from dcp_projections.settings import Settings
from dcp_projections.state import Provider, State, gpu_key

S = 1_000_000


def test_settings_defaults():
    """SPEC section 7's defaults (flags and environment are read by dcp_http.config)."""
    s = Settings()
    assert (s.lease_ttl_s, s.max_attempts, s.online_s, s.stale_s) == (120, 3, 90, 300)
    assert (s.deadline_grace_s, s.queue_timeout_s, s.sweep_interval_s) == (60, 86400, 5)
    assert not s.sandbox and not s.auto_approve


@pytest.mark.parametrize(
    ("iban", "ok"),
    [
        ("SA0380000000608010167519", True),
        ("SA4420000001234567891234", True),
        ("SA0380000000608010167518", False),  # bad check digits
        ("SA038000000060801016751", False),  # 21 digits
        ("GB82WEST12345698765432", False),  # not Saudi
        ("sa0380000000608010167519", False),  # callers normalise case first
    ],
)
def test_iban_check(iban, ok):
    """SA + 22 digits with a valid ISO 13616 mod-97 check."""
    assert iban_is_valid(iban) is ok


def test_presence_thresholds():
    """online <= 90 s, stale <= 300 s, else offline; never heartbeated is offline."""
    p = Provider(
        provider_id="p",
        name="p",
        email="p@x",
        gpu_model="H100",
        gpu_count=1,
        vram_gb=80,
        approved=True,
        created_at_us=0,
        last_seq=1,
    )
    s = Settings()
    assert presence(p.last_heartbeat_us, 10**12, s) == "offline"
    p.last_heartbeat_us = 0
    assert [presence(p.last_heartbeat_us, t * S, s) for t in (0, 90, 91, 300, 301)] == [
        "online",
        "online",
        "stale",
        "stale",
        "offline",
    ]
    assert takes_new_jobs(p, 0, s)
    p.paused = True
    assert not takes_new_jobs(p, 0, s)


def _state_with(images: list[str]) -> State:
    state = State()
    for i, ref in enumerate(images, 1):
        apply(state, i, ev.ImageAllowed(reference=ref, at_us=0))
    return state


def test_allowlist_patterns():
    """Exact references, "prefix*" entries and "repo@sha256:" entries."""
    state = _state_with(["dcp/a:1", "ghcr.io/dcp/*", "dcp/b@sha256:"])
    assert state.image_allowed("dcp/a:1")
    assert not state.image_allowed("dcp/a:2")
    assert state.image_allowed("ghcr.io/dcp/train:7")
    assert state.image_allowed("dcp/b@sha256:" + "a" * 64)
    assert not state.image_allowed("dcp/b@sha256:" + "a" * 63)
    assert not state.image_allowed("dcp/b:latest")


def test_submit_refusals_name_the_field():
    """Validation errors carry the field; unknown renters are 404; images must be allowed."""
    state = _state_with(["img:1"])
    apply(
        state, 2, ev.RenterRegistered(renter_id="r", name="r", email="r@x", key_hash="h", at_us=0)
    )

    def submit(**kw):
        base = {
            "job_id": "j",
            "renter_id": "r",
            "container_spec": ev.ContainerSpec(image="img:1"),
        }
        return decide(state, c.SubmitJob(**{**base, **kw}), 0, Settings())

    with pytest.raises(ValidationError) as e:
        submit(max_duration_seconds=59)
    assert e.value.fields[0]["field"] == "max_duration_seconds" and e.value.status == 400
    with pytest.raises(ImageNotAllowed):
        submit(container_spec=ev.ContainerSpec(image="evil:1"))
    with pytest.raises(NotFound):
        submit(renter_id="nobody")


def test_gpu_names_compare_loosely_and_unknown_models_pay_default():
    """ "RTX 4090" = "rtx4090"; an unknown model or "any" is priced at default."""
    state = State()
    assert gpu_key("RTX 4090") == gpu_key("rtx-4090") == "rtx4090"
    assert state.price_for("rtx4090") == 100
    assert state.price_for("any") == state.price_for("B200") == 33
    assert state.price_for("h200") == 919
