"""Running one independent pass of an audit in a second process while this one folds."""

from __future__ import annotations

import contextlib
import multiprocessing.context
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from multiprocessing.connection import Connection
from typing import Any, Generic, Protocol, TypeVar

from dcp_app.foldlog import process_context

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class _Pending(Protocol[T_co]):
    """A pass under way in the second process (a Future's two calls)."""

    def done(self) -> bool: ...

    def result(self) -> T_co: ...


class Beside(Generic[T]):
    """The pass running in the second process (or, failing that, to be run here)."""

    def __init__(self, pending: _Pending[T] | None, inline: Callable[[], T]) -> None:
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


class _Forked(Generic[T]):
    """A pass in a forked child, its result (or what it raised) coming back over a pipe."""

    def __init__(self, recv: Connection) -> None:
        self._recv = recv
        self._out: tuple[str, Any] | None = None

    def done(self) -> bool:
        return self._out is not None or self._recv.poll()

    def result(self) -> T:
        if self._out is None:
            try:
                self._out = self._recv.recv()
            except EOFError:  # the child died before it answered
                raise OSError("the second process ended without a result") from None
        kind, value = self._out
        if kind == "raised":
            raise value
        return value  # type: ignore[no-any-return]


def _run_and_send(send: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """The forked child: `fn(*args)`'s result, or the exception it raised, back to the parent
    (one that cannot be pickled ends the child without an answer: the parent runs the pass
    itself and meets it there)."""
    try:
        out: tuple[str, Any] = ("ok", fn(*args))
    except Exception as e:
        out = ("raised", e)
    send.send(out)
    send.close()


@contextlib.contextmanager
def beside(fn: Callable[..., T], *args: Any, inline: Callable[[], T]) -> Iterator[Beside[T]]:
    """Start `fn(*args)` in a second process for the duration of the block: forked where
    that is safe (dcp_app.foldlog.process_context: it starts in a millisecond, with what
    this process imported), else spawned (nothing of this process's state is shared).

    Where no second process can run (a sandbox without fork/exec, a crashed child), the
    result is computed by `inline()` here instead, so the audit still completes, only slower.
    """
    ctx = process_context()
    if ctx.get_start_method() == "fork":
        with _forked(ctx, fn, args, inline) as done:
            yield done
        return
    pending: Future[T] | None = None
    with contextlib.ExitStack() as stack:
        try:
            pool = stack.enter_context(ProcessPoolExecutor(1, mp_context=get_context("spawn")))
            pending = pool.submit(fn, *args)
        except (OSError, BrokenProcessPool):
            pending = None
        yield Beside(pending, inline)


@contextlib.contextmanager
def _forked(
    ctx: multiprocessing.context.BaseContext,
    fn: Callable[..., T],
    args: tuple[Any, ...],
    inline: Callable[[], T],
) -> Iterator[Beside[T]]:
    try:
        recv, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_run_and_send, args=(send, fn, args), daemon=True)  # type: ignore[attr-defined]
        child.start()
        send.close()
    except OSError:
        yield Beside(None, inline)
        return
    try:
        yield Beside(_Forked(recv), inline)
    finally:
        recv.close()
        if child.is_alive():  # the block ended without waiting for it (an error here)
            child.terminate()
        child.join()
