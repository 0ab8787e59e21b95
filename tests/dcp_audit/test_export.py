"""export: JSON lines with the hash fields; the stdlib reference verifier checks them alone."""

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from dcp_audit.cli import main

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "scripts" / "reference_verifier.py"
DOC = ROOT / "docs" / "audit.md"


def export_to(log_path: Path, out: Path, *extra: str) -> None:
    assert main(["export", "--db", str(log_path), "--out", str(out), *extra]) == 0


def reference(export: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # -I: isolated mode, no site-packages: the verifier needs nothing but the standard library.
    return subprocess.run(
        [sys.executable, "-I", str(REFERENCE), str(export), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_export_has_every_event_with_its_hash_fields(log_path, tmp_path):
    """One line per event, in order, with the stored payload text exactly."""
    out = tmp_path / "log.jsonl"
    export_to(log_path, out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    rows = sqlite3.connect(log_path).execute("SELECT seq, payload, hash FROM events ORDER BY seq")
    rows = rows.fetchall()
    assert [(e["seq"], e["payload"], e["hash"]) for e in lines] == rows
    assert list(lines[0]) == [
        "seq",
        "stream_id",
        "stream_version",
        "type",
        "schema_version",
        "recorded_at_us",
        "actor",
        "idempotency_key",
        "payload",
        "prev_hash",
        "hash",
    ]


def test_export_range(log_path, tmp_path):
    """--after-seq and --until-seq bound the export."""
    out = tmp_path / "part.jsonl"
    export_to(log_path, out, "--after-seq", "3", "--until-seq", "7")
    assert [json.loads(x)["seq"] for x in out.read_text().splitlines()] == [4, 5, 6, 7]


def test_export_to_stdout(log_path, capfdbinary):
    """Without --out the lines go to standard output."""
    assert main(["export", "--db", str(log_path)]) == 0
    out = capfdbinary.readouterr().out.decode()
    n = sqlite3.connect(log_path).execute("SELECT count(*) FROM events").fetchone()[0]
    assert len(out.splitlines()) == n


def test_reference_verifier_passes_on_an_export(log_path, tmp_path):
    """The stdlib-only verifier accepts an honest export and agrees on the head hash."""
    out = tmp_path / "log.jsonl"
    export_to(log_path, out)
    n, head = sqlite3.connect(log_path).execute("SELECT max(seq), hash FROM events").fetchone()
    result = reference(out, head)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"OK {n} events, head hash {head}, sum of balances 0"


def test_reference_verifier_fails_on_a_tampered_export(log_path, tmp_path):
    """Change one amount in one exported payload: the verifier fails at that sequence."""
    out = tmp_path / "log.jsonl"
    export_to(log_path, out)
    lines = out.read_text().splitlines()
    i = next(i for i, x in enumerate(lines) if '"renter.deposit_credited"' in x)
    e = json.loads(lines[i])
    e["payload"] = re.sub(r'"amount_halala":(\d+)', r'"amount_halala":9\1', e["payload"], count=1)
    lines[i] = json.dumps(e)
    out.write_text("\n".join(lines) + "\n")
    result = reference(out)
    assert result.returncode == 1
    assert f"FAIL at seq {e['seq']}" in result.stderr


def test_reference_verifier_fails_on_a_missing_line(log_path, tmp_path):
    """A line dropped from the export is named by its sequence."""
    out = tmp_path / "log.jsonl"
    export_to(log_path, out)
    lines = out.read_text().splitlines()
    del lines[4]
    out.write_text("\n".join(lines) + "\n")
    result = reference(out)
    assert result.returncode == 1
    assert "FAIL at seq 5" in result.stderr


def test_reference_verifier_fails_on_a_wrong_published_head(log_path, tmp_path):
    """A published head hash that the export does not end at fails it."""
    out = tmp_path / "log.jsonl"
    export_to(log_path, out)
    result = reference(out, "ab" * 32)
    assert result.returncode == 1
    assert "is not the published" in result.stderr


def test_docs_carry_the_reference_verifier():
    """docs/audit.md shows the same verifier as scripts/reference_verifier.py."""
    code = REFERENCE.read_text()
    body = code[code.index("import hashlib") :]
    assert body.strip() in DOC.read_text()
