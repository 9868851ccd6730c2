"""``CallbackGate``: lets callbacks run while open; closing it waits for those still running.

A lifecycle transition runs in one callback group while sensor, query, timer and service
callbacks run in others, so ``deactivate`` or ``cleanup`` can destroy a publisher (or drop the
pipeline) under a callback that is half way through. Destroying a subscription stops new
callbacks, not the one already dispatched. Every such callback goes through a gate (the
:func:`gated` decorator); a transition closes the gate first, which waits for the callbacks
inside, and only then tears down what they use. A callback arriving at a closed gate returns
at once without doing anything.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["CallbackGate", "gated"]

F = TypeVar("F", bound=Callable[..., Any])


class CallbackGate:
    """Open/closed, with a count of the callbacks inside."""

    def __init__(self, is_open: bool = False) -> None:
        self._cv = threading.Condition()
        self._open = is_open
        self._inside = 0

    def open(self) -> None:
        with self._cv:
            self._open = True

    def close(self, timeout_s: float | None = None) -> bool:
        """Refuse new callbacks and wait for those inside; False if some still run after
        ``timeout_s``."""
        with self._cv:
            self._open = False
            return self._cv.wait_for(lambda: self._inside == 0, timeout_s)

    def enter(self) -> bool:
        """True (and counted inside) when open; pair with :meth:`leave`."""
        with self._cv:
            if not self._open:
                return False
            self._inside += 1
            return True

    def leave(self) -> None:
        with self._cv:
            self._inside -= 1
            self._cv.notify_all()


def gated(gate_attr: str, closed: Any = None) -> Callable[[F], F]:
    """Run the method only through ``getattr(self, gate_attr)``; return ``closed`` (called with
    the method's arguments when callable) when the gate is closed."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            gate: CallbackGate = getattr(self, gate_attr)
            if not gate.enter():
                return closed(self, *args, **kwargs) if callable(closed) else closed
            try:
                return fn(self, *args, **kwargs)
            finally:
                gate.leave()

        return wrapper  # type: ignore[return-value]

    return decorate
