"""Server-rendered SVG bar charts: geometry here, drawing in templates/_chart.html.

No chart library and no script: the page carries the SVG, so the chart shows without
JavaScript and under a CSP that allows no inline code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import msgspec

WIDTH, HEIGHT, PAD = 600, 200, 28


class Bar(msgspec.Struct, frozen=True):
    label: str
    value: int
    x: float
    y: float
    w: float
    h: float


class Chart(msgspec.Struct, frozen=True):
    """Bars scaled into a WIDTH x HEIGHT box; `money` says the values are halala."""

    bars: list[Bar]
    top: int
    money: bool
    width: int = WIDTH
    height: int = HEIGHT
    pad: int = PAD


def bars(points: list[tuple[str, int]], money: bool = False) -> Chart:
    """A chart of (label, value) pairs, in the order given."""
    top = max((v for _, v in points), default=0)
    scale = top or 1  # an empty chart is drawn flat, labelled 0
    n = max(len(points), 1)
    slot = (WIDTH - 2 * PAD) / n
    inner = HEIGHT - 2 * PAD
    out = []
    for i, (label, value) in enumerate(points):
        h = inner * max(value, 0) / scale
        out.append(Bar(label, value, PAD + i * slot + slot * 0.15, HEIGHT - PAD - h, slot * 0.7, h))
    return Chart(out, top, money)


def per_day(
    items: Iterable[tuple[str | None, int]], days: int, today: dt.date
) -> list[tuple[str, int]]:
    """Sum (RFC 3339 time, amount) pairs per UTC day over the last `days` days, oldest first."""
    start = today - dt.timedelta(days=days - 1)
    totals = {start + dt.timedelta(days=i): 0 for i in range(days)}
    for when, amount in items:
        if not when:
            continue
        day = dt.datetime.fromisoformat(when.replace("Z", "+00:00")).date()
        if day in totals:
            totals[day] += amount
    return [(d.strftime("%m-%d"), v) for d, v in totals.items()]
