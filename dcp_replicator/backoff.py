"""Exponential backoff with jitter, bounded."""

from __future__ import annotations

import random


def backoff_s(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """The wait before retry number `attempt` (1, 2, ...): base * 2^(attempt-1), capped at
    max_s, scaled by a random factor in [0.5, 1] so that many clients do not retry in step."""
    r: float = (rng or random).uniform(0.5, 1.0)
    return float(min(max_s, base_s * 2 ** min(attempt - 1, 30)) * r)
