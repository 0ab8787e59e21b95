"""The job priorities, in one table: each one's place in the queue and its price (SPEC 2).

Queue order (`dcp_projections.state`), the price (`dcp_projections.settlement`), submit
validation (`dcp_projections.jobs`) and the read side's queue-position SQL
(`dcp_app.queries`) all read this table.
"""

from __future__ import annotations

from typing import NamedTuple, get_args

from dcp_events.catalogue import Priority


class PriorityClass(NamedTuple):
    rank: int  # queue order: lower is served first
    pct: int  # percent of the standard price


PRIORITIES: dict[Priority, PriorityClass] = {
    "priority": PriorityClass(rank=0, pct=120),
    "standard": PriorityClass(rank=1, pct=100),
    "economy": PriorityClass(rank=2, pct=90),
}
assert set(PRIORITIES) == set(get_args(Priority)), "every wire priority has a row"

PRIORITY_RANK: dict[str, int] = {name: p.rank for name, p in PRIORITIES.items()}
PRIORITY_PCT: dict[str, int] = {name: p.pct for name, p in PRIORITIES.items()}
