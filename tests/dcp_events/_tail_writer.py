"""One of several writer processes of the no-skip test: appends a fixed amount, then exits.

Arguments: the log's postgresql:// URL, this writer's number, appends per task, tasks.
"""

import asyncio
import random
import sys

from dcp_events.postgres_store import PostgresEventStore
from dcp_events.store import NewEvent


async def main(dsn: str, writer: int, appends: int, tasks: int) -> None:
    store = await PostgresEventStore.open(dsn)
    rng = random.Random(writer)

    async def task(t: int) -> None:
        stream = f"w{writer}-t{t}"
        version = 0
        for i in range(appends):
            n = rng.randint(1, 3)  # batches of uneven size, so commits interleave unevenly
            events = [
                NewEvent("tail.test", 1, b'{"type":"tail.test","w":%d,"t":%d,"i":%d,"k":%d}'
                         % (writer, t, i, k))
                for k in range(n)
            ]  # fmt: skip
            r = await store.append(stream, version, events)
            version = r.last_version

    await asyncio.gather(*[task(t) for t in range(tasks)])
    await store.close()


asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
