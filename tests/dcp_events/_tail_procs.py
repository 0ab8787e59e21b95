"""The processes of the many-process tail test (test_postgres_tail.py): writers and readers,
each its own node on one PostgreSQL log.

    python _tail_procs.py write URL WRITER TASKS APPENDS   # append, then exit 0
    python _tail_procs.py read URL BATCH PAUSE_S OUT        # tail until a tail.stop event

A writer's tasks append 1 to 3 events per append, now to one stream, now atomically to two
(one of them shared by all tasks of the writer, with a version check, so appends also clash
and retry), so batches of uneven size from many processes interleave unevenly. A reader tails
from seq 0 with the given batch size, pausing PAUSE_S after each batch (a slow consumer lags
and so reads while writes land), and writes "seq hash" per event seen, in the order seen.
"""

from __future__ import annotations

import asyncio
import random
import sys

from dcp_events.errors import ConcurrencyError
from dcp_events.postgres_store import PostgresEventStore
from dcp_events.store import AppendRequest, NewEvent


def _event(writer: int, task: int, i: int, k: int) -> NewEvent:
    body = b'{"type":"tail.test","w":%d,"t":%d,"i":%d,"k":%d,"pad":"%b"}' % (
        writer,
        task,
        i,
        k,
        b"x" * 120,
    )
    return NewEvent("tail.test", 1, body, actor=f"writer-{writer}")


async def write(url: str, writer: int, tasks: int, appends: int) -> None:
    store = await PostgresEventStore.open(url)
    shared = f"w{writer}-shared"

    shared_v = 0  # this process's last known version of the shared stream

    async def task(t: int) -> None:
        nonlocal shared_v
        rng = random.Random(writer * 1000 + t)
        own, version = f"w{writer}-t{t}", 0
        for i in range(appends):
            events = [_event(writer, t, i, k) for k in range(rng.randint(1, 3))]
            if rng.random() < 0.5:
                result = await store.append(own, version, events)
                version = result.last_version
                continue
            while True:  # both streams or neither; another task may have moved the shared one
                try:
                    mine, theirs = await store.append_atomic(
                        [
                            AppendRequest(own, version, events),
                            AppendRequest(shared, shared_v, [_event(writer, t, i, 9)]),
                        ]
                    )
                except ConcurrencyError as e:
                    assert e.stream_id == shared
                    shared_v = max(shared_v, e.actual_version)
                    continue
                version, shared_v = mine.last_version, max(shared_v, theirs.last_version)
                break

    await asyncio.gather(*[task(t) for t in range(tasks)])
    await store.close()


async def read(url: str, batch_size: int, pause_s: float, out: str) -> None:
    store = await PostgresEventStore.open(url)
    seen: list[str] = []
    async for batch in store.tail(0, batch_size=batch_size, poll_s=5.0):
        seen.extend(f"{e.seq} {e.hash}" for e in batch)
        if any(e.type == "tail.stop" for e in batch):
            break
        if pause_s:
            await asyncio.sleep(pause_s)
    with open(out, "w") as f:
        f.write("\n".join(seen) + "\n")
    await store.close()


if __name__ == "__main__":
    mode, url, *rest = sys.argv[1:]
    if mode == "write":
        asyncio.run(write(url, int(rest[0]), int(rest[1]), int(rest[2])))
    else:
        asyncio.run(read(url, int(rest[0]), float(rest[1]), rest[2]))
