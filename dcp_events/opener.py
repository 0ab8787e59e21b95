"""Open the event log a ledger is named by: a filesystem path means SQLite, a `postgresql://`
(or `postgres://`) URL means PostgreSQL (SPEC section 6; docs/postgres.md).

Every tool that takes `--db` / `DCP_DB` (serve, audit, replicate, migrate) goes through
`open_store`, so the rule is the same everywhere. A URL carries a password; anything meant for
a log or an error message shows `redact(target)` instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from dcp_events.errors import StoreError

if TYPE_CHECKING:
    from dcp_events.postgres_store import PostgresEventStore
    from dcp_events.sqlite_store import SqliteEventStore

    OpenedStore = SqliteEventStore | PostgresEventStore

POSTGRES_SCHEMES = ("postgresql", "postgres")
# `scheme://`: what sets a URL apart from a path (a path may contain ':' but not a scheme).
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class StoreTargetError(StoreError):
    """A ledger was named by something that is neither a path nor a PostgreSQL URL."""


def is_postgres(target: str | Path) -> bool:
    """True when `target` is a PostgreSQL URL; False for a path. Raises StoreTargetError for
    any other URL (mysql://, sqlite://, http://...) or an empty name."""
    return _kind(target) == "postgres"


def _kind(target: str | Path) -> str:
    if isinstance(target, Path):
        return "sqlite"
    if not target.strip():
        raise StoreTargetError(
            "no ledger named: give a file path (SQLite) or a postgresql:// URL (PostgreSQL)"
        )
    m = _SCHEME.match(target)
    if m is None:
        return "sqlite"
    if m.group(1).lower() in POSTGRES_SCHEMES:
        return "postgres"
    raise StoreTargetError(
        f"cannot open a ledger at {redact(target)}: a ledger is a file path (SQLite) or a"
        f" postgresql:// URL (PostgreSQL), not a {m.group(1)}:// URL"
    )


def postgres_url(target: str) -> str:
    """`target` as libpq takes it: the scheme in lower case (libpq knows no other spelling)."""
    scheme, rest = target.split("://", 1)
    return f"{scheme.lower()}://{rest}"


def redact(target: str | Path) -> str:
    """`target` fit to print: a URL's password (in its user part or a `password=` query
    parameter) replaced by `***`; a path unchanged."""
    text = str(target)
    if _SCHEME.match(text) is None:
        return text
    try:
        parts = urlsplit(text)
    except ValueError:
        return "<unparsable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


async def open_store(target: str | Path, *, max_connections: int = 8) -> OpenedStore:
    """Open (creating if needed) the event log at `target`: a path opens SqliteEventStore, a
    postgresql:// URL opens PostgresEventStore with a pool of up to `max_connections`.

    Raises StoreTargetError for anything else and StoreError when the log cannot be opened
    (the message never holds the URL's password).
    """
    if _kind(target) == "postgres":
        # Imported here: a SQLite-only tool never loads the PostgreSQL driver.
        from dcp_events.postgres_store import PostgresEventStore

        return await PostgresEventStore.open(
            postgres_url(str(target)), max_connections=max_connections
        )
    from dcp_events.sqlite_store import SqliteEventStore

    return await SqliteEventStore.open(target)
