"""The mirrored column lists stay in step with the local read models and the target schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dcp_events.sqlite_store import apply_schema
from dcp_projections import tables
from dcp_replicator.tables import MIRRORED, NEVER_MIRRORED

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def local_columns(tmp_path) -> dict[str, set[str]]:
    conn = sqlite3.connect(tmp_path / "schema.db")
    apply_schema(conn)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    cols = {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in tables}
    conn.close()
    return cols


def test_every_local_column_is_mirrored(local_columns):
    """A column added to a mirrored local table must be added to its TableSpec (and the
    target migration) too, or this fails; unless its spec says it is never mirrored (a key)."""
    for t in MIRRORED:
        local = tables.BY_NAME[t.local]
        kept = local_columns[t.local] - {c.name for c in local.columns if not c.mirrored}
        assert {c.local for c in t.columns} == kept, t.local
    assert [c.name for c in tables.TOPUPS.columns if not c.mirrored] == ["idempotency_key"]


def test_every_read_model_table_is_mirrored_or_excluded_on_purpose(local_columns):
    """Each local read model is either mirrored or deliberately left out."""
    read_models = set(local_columns) - {"events", "projection_state"}
    deliberate = NEVER_MIRRORED | {"image_allowlist"}  # admin config, rows get deleted
    assert read_models == {t.local for t in MIRRORED} | deliberate


def test_target_migration_has_every_target_column():
    """Every target column named in a TableSpec exists in the migration's CREATE TABLE."""
    ddl = (ROOT / "schemas" / "supabase" / "001_dcp_mirror.sql").read_text()
    for t in MIRRORED:
        start = ddl.index(f"CREATE TABLE IF NOT EXISTS {t.target} (")
        body = ddl[start : ddl.index(");", start)]
        declared = {line.split()[0] for line in body.splitlines()[1:] if line.strip()}
        declared -= {"PRIMARY"}
        assert declared == set(t.target_columns), t.target
