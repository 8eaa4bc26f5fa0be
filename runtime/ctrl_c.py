"""Ctrl-C during a run: the first press stops the loop between batches (every output gets the same
frames), a second press interrupts at once; while outputs are finalized Ctrl-C waits."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class CtrlC:
    """While active (main thread, default SIGINT handler only): the first Ctrl-C just sets
    ``pressed``, so the loop stops between batches with every output given the same frames; a
    second Ctrl-C raises KeyboardInterrupt at once. Elsewhere Ctrl-C raises as usual."""

    def __init__(self) -> None:
        self.pressed = False
        self._previous = None

    def __enter__(self) -> "CtrlC":
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@contextmanager
def sigint_deferred():
    """Ignore Ctrl-C while outputs are finalized (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
