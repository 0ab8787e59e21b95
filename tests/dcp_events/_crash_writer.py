"""Appends forever, printing each acknowledged append; the crash test SIGKILLs it.

The argument names the log: a postgresql:// URL for PostgreSQL, otherwise a SQLite path.
"""

import asyncio
import sys

from dcp_events.postgres_store import PostgresEventStore
from dcp_events.sqlite_store import SqliteEventStore
from dcp_events.store import NewEvent


async def main(where: str) -> None:
    store: SqliteEventStore | PostgresEventStore
    if where.startswith("postgresql://"):
        store = await PostgresEventStore.open(where)
    else:
        store = await SqliteEventStore.open(where)

    async def task(t: int) -> None:
        for i in range(1_000_000):
            # Three events per append: a partial append would show as a stream not multiple of 3.
            events = [
                NewEvent("crash.test", 1, b'{"type":"crash.test","t":%d,"i":%d,"k":%d}' % (t, i, k))
                for k in range(3)
            ]
            r = await store.append(f"t{t}", i * 3, events)
            sys.stdout.write(f"{r.stream_id} {r.last_version} {r.last_seq}\n")
            sys.stdout.flush()

    await asyncio.gather(*[task(t) for t in range(16)])


asyncio.run(main(sys.argv[1]))
