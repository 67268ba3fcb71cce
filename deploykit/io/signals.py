"""SIGINT and SIGTERM: both end deploykit through the same cleanup, and neither splits a set of outputs.

`interrupts_raise()` makes SIGTERM raise `Terminated` (a KeyboardInterrupt) for the duration of a command, so
that every `finally`, temporary folder and staged output that Ctrl-C cleans up is cleaned up when a scheduler or
`timeout` stops deploykit too (by default SIGTERM kills the process where it stands). `deferred()` holds both
signals while outputs are moved into place (deploykit.io.outputs), so an artifact and its sidecar land together
or not at all; a signal that arrived meanwhile is delivered right after.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from deploykit.errors import Terminated, raise_interrupted

HANDLED = (signal.SIGINT, signal.SIGTERM)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"terminated by signal {signum}")


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGINT raises Interrupted (a KeyboardInterrupt) and SIGTERM Terminated inside the block (main thread
    only)."""
    if not _main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in HANDLED}
    signal.signal(signal.SIGINT, raise_interrupted)
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver the first that arrived to the handler that
    was in place before (which raises, or for a library caller without handlers, ends the process)."""
    if not _main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in HANDLED}
    for sig in HANDLED:
        signal.signal(sig, lambda signum, _frame: arrived.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if arrived:
            signal.raise_signal(arrived[0])
