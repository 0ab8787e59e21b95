"""Running one independent pass of an audit in a second process while this one folds."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def beside(fn: Callable[..., T], *args: Any, inline: Callable[[], T]) -> Iterator[Callable[[], T]]:
    """Start `fn(*args)` in a fresh process (spawned: nothing of this process's state is
    shared) and yield a function that waits for its result.

    Where no second process can run (a sandbox without fork/exec, a crashed child), that
    function computes `inline()` here instead, so the audit still completes, only slower.
    """
    pending: Future[T] | None = None
    with contextlib.ExitStack() as stack:
        try:
            pool = stack.enter_context(ProcessPoolExecutor(1, mp_context=get_context("spawn")))
            pending = pool.submit(fn, *args)
        except (OSError, BrokenProcessPool):
            pending = None

        def result() -> T:
            if pending is not None:
                try:
                    return pending.result()
                except (OSError, BrokenProcessPool):
                    pass
            return inline()

        yield result
