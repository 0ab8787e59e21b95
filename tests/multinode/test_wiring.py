"""`dcp serve --db postgresql://...`: the settings around naming a ledger by URL, and the
service's behaviour on a shared log that the process tests cannot pin down."""

from __future__ import annotations

import pytest

from dcp_http.config import ConfigError, load_config

URL = "postgresql://dcp:secret@db.example:5432/ledger"


def test_a_url_names_a_postgresql_ledger_with_snapshots_off_unless_a_directory_is_named():
    config = load_config({"DCP_DB": URL})
    assert config.db == URL
    assert config.snapshot_path() is None  # no file to keep them beside
    named = load_config({"DCP_DB": URL, "DCP_SNAPSHOT_DIR": "/var/lib/dcp/snaps"})
    assert str(named.snapshot_path()) == "/var/lib/dcp/snaps"
    assert str(load_config({"DCP_DB": "./x.db"}).snapshot_path()) == "x.db.snapshots"


@pytest.mark.parametrize("db", ["mysql://u@h/db", "sqlite:///x.db", "   "])
def test_a_ledger_named_by_another_kind_of_url_is_refused_at_start(db):
    with pytest.raises(ConfigError, match="DCP_DB"):
        load_config({"DCP_DB": db})
