"""The signals that end deploykit (`HANDLED`: SIGHUP, SIGINT, SIGQUIT, SIGTERM) all end it through the same
cleanup, and none splits a set of outputs.

`interrupts_raise()` makes SIGINT raise `Interrupted` and the others `Terminated` (both KeyboardInterrupts) for
the duration of a command, so that every `finally`, temporary folder and staged output that Ctrl-C cleans up is
cleaned up when a scheduler or `timeout` stops deploykit, its terminal or SSH session closes (SIGHUP) or Ctrl-\\
quits it: by default each of these kills the process where it stands (SIGQUIT with a core dump). `deferred()`
holds them all while outputs are moved into place (deploykit.io.outputs), so an artifact and its sidecar land
together or not at all; a signal that arrived meanwhile is delivered right after. A signal deploykit was started
with ignored stays ignored, as POSIX tools keep it: `nohup` ignores SIGHUP so that the work outlives the
terminal, and a shell ignores SIGINT and SIGQUIT for a job it starts in the background (`deploykit ... &`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any

from deploykit.errors import SIGNALLED, Terminated, raise_interrupted

HANDLED = tuple(SIGNALLED)
Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None  # as signal.getsignal gives


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"terminated by signal {signum}", signum=signum)


def _raiser(sig: int) -> Handler:
    return raise_interrupted if sig == signal.SIGINT else _raise_terminated


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGINT raises Interrupted (a KeyboardInterrupt) and SIGTERM, SIGHUP and SIGQUIT Terminated inside the
    block (main thread only)."""
    if not _main_thread():
        yield
        return
    previous = _take(_raiser)
    try:
        yield
    finally:
        restore(previous)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold the HANDLED signals until the block ends, then deliver the first that arrived to the handler that
    was in place before (which raises, or for a library caller without handlers, ends the process)."""
    if not _main_thread():
        yield
        return
    arrived: list[int] = []
    previous = _take(lambda _sig: lambda signum, _frame: arrived.append(signum))
    try:
        yield
    finally:
        restore(previous)
        if arrived:
            signal.raise_signal(arrived[0])


def listening(handler: Handler) -> dict[int, Handler]:
    """Put `handler` in place for every HANDLED signal not ignored (serve's request to drain and stop); what was
    there before, for `restore`."""
    return _take(lambda _sig: handler)


def _take(handler_for: Callable[[int], Handler]) -> dict[int, Handler]:
    """Put `handler_for(sig)` in place for each HANDLED signal that is not ignored (see the module's docstring);
    what was there before, for `restore`."""
    return {sig: signal.signal(sig, handler_for(sig)) for sig in HANDLED if signal.getsignal(sig) != signal.SIG_IGN}


def restore(previous: Mapping[int, Handler]) -> None:
    """Put back the handlers `_take` replaced (None, a handler set outside Python, as the default)."""
    for sig, handler in previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
