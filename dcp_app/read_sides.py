"""Open the read side of a ledger named by a string (docs/design.md, "Read models").

A path is SQLite (dcp_app.readmodel), a `postgresql://` URL is PostgreSQL
(dcp_app.readmodel_pg): the same string that names the event store (dcp_events.open_store).
In a module of its own, above the interface (dcp_app.readside) and both implementations, so
that neither implementation is imported by the interface it implements.
"""

from __future__ import annotations

from pathlib import Path

from dcp_app.readmodel import SqliteReadModels
from dcp_app.readside import ReadModels
from dcp_events.opener import is_postgres


async def open_read_side(db: str | Path) -> ReadModels:
    """The read models of the ledger named by `db`: a SQLite file path, or a postgresql:// URL.

    The schema must exist (opening the event store on `db` applies it). Nothing is rebuilt
    here: call `catch_up()` before serving reads. Raises StoreTargetError for a name that is
    neither (mysql://, an empty string).
    """
    if is_postgres(db):
        # Imported here, as dcp_events.open_store imports its store: a SQLite server never
        # loads the PostgreSQL driver (10 MB of its resident memory).
        from dcp_app.readmodel_pg import PostgresReadModels

        return await PostgresReadModels.open(str(db))
    return SqliteReadModels(str(db))
