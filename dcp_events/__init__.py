"""The append-only, hash-chained event log of DCP.

Public surface: the event base (`Event`, `Posting`), the codec, the store interface and its
SQLite and PostgreSQL implementations, and the hash chain. `open_store(target)` opens the log a
ledger is named by: a path means SQLite, a postgresql:// URL means PostgreSQL.
"""

from dcp_events.opener import is_postgres, open_store, redact

__all__ = ["is_postgres", "open_store", "redact"]
