"""The event base type, postings, and schema evolution (upcasting).

Every domain event is a frozen msgspec Struct with a stable, explicit tag (`job.submitted`),
never a module path, so stored data never depends on code layout. Fields are only ever added
(with defaults); a field's type never changes and a tag is never reused. A breaking change gets a
new tag, or an upcaster that turns the old JSON into the new shape on read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar

import msgspec

# Bounds on every amount: far above any real balance, far below where JSON readers in other
# languages lose integer precision (2**53).
MAX_HALALA = 10**15
Halala = Annotated[int, msgspec.Meta(ge=-MAX_HALALA, le=MAX_HALALA)]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every event. Subclasses set `tag="area.what_happened"` explicitly."""

    schema_version: ClassVar[int] = 1


class Posting(msgspec.Struct, frozen=True, array_like=False):
    """One leg of a double-entry movement: `amount_halala` added to `account`."""

    account: str
    amount_halala: Halala


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

# (tag, from_version) -> function turning that version's JSON object into version + 1.
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def register_upcaster(tag: str, from_version: int, fn: Upcaster) -> None:
    """Register how to turn a `tag` payload of `from_version` into `from_version + 1`."""
    key = (tag, from_version)
    if key in _UPCASTERS:
        raise ValueError(f"upcaster for {tag} v{from_version} already registered")
    _UPCASTERS[key] = fn


def upcast(tag: str, version: int, target: int, obj: dict[str, Any]) -> dict[str, Any]:
    """Apply the registered upcasters to bring `obj` from `version` to `target`."""
    while version < target:
        fn = _UPCASTERS.get((tag, version))
        if fn is None:
            raise KeyError(f"no upcaster for {tag} v{version}")
        obj = fn(obj)
        version += 1
    return obj
