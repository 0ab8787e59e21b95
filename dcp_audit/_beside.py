"""Running one independent pass of an audit in a second process while this one folds."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Beside(Generic[T]):
    """The pass running in the second process (or, failing that, to be run here)."""

    def __init__(self, pending: Future[T] | None, inline: Callable[[], T]) -> None:
        self._pending = pending
        self._inline = inline

    def result(self) -> T:
        """Wait for the pass and return its result; run it here if the process failed."""
        if self._pending is not None:
            try:
                return self._pending.result()
            except (OSError, BrokenProcessPool):
                self._pending = None
        return self._inline()

    def ready(self) -> T | None:
        """The result if the pass has already finished in the second process, else None."""
        if self._pending is not None and self._pending.done():
            return self.result()
        return None


@contextlib.contextmanager
def beside(fn: Callable[..., T], *args: Any, inline: Callable[[], T]) -> Iterator[Beside[T]]:
    """Start `fn(*args)` in a fresh process (spawned: nothing of this process's state is
    shared) for the duration of the block.

    Where no second process can run (a sandbox without fork/exec, a crashed child), the
    result is computed by `inline()` here instead, so the audit still completes, only slower.
    """
    pending: Future[T] | None = None
    with contextlib.ExitStack() as stack:
        try:
            pool = stack.enter_context(ProcessPoolExecutor(1, mp_context=get_context("spawn")))
            pending = pool.submit(fn, *args)
        except (OSError, BrokenProcessPool):
            pending = None
        yield Beside(pending, inline)
