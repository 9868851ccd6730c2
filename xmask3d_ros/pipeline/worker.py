"""A worker thread with a keep-latest slot: the producer never waits, stale work is dropped."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["LatestSlotWorker"]

T = TypeVar("T")


class LatestSlotWorker(Generic[T]):
    """Runs ``handler(item)`` on its own thread for the newest submitted item.

    ``submit`` puts an item in a one-element slot and returns at once; an item still waiting
    there is replaced (the caller counts that as a drop). ``handler`` must not raise (the
    pipeline wraps it); if it does, the exception is passed to ``on_error`` and the worker
    keeps going.
    """

    def __init__(self, handler: Callable[[T], None], on_error: Callable[[Exception], None],
                 *, name: str = "xmask3d-worker") -> None:
        self._handler = handler
        self._on_error = on_error
        self._cv = threading.Condition()
        self._slot: T | None = None
        self._has_item = False
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        """Offer ``item``; returns True when it replaced a waiting item (one dropped)."""
        with self._cv:
            if self._closed:
                raise RuntimeError("worker is closed")
            replaced = self._has_item
            self._slot, self._has_item = item, True
            self._cv.notify_all()
        return replaced

    @property
    def busy(self) -> bool:
        """An item is being handled or waiting."""
        with self._cv:
            return self._busy or self._has_item

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is waiting or running; False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: not (self._busy or self._has_item), timeout)

    def close(self, timeout: float | None = None) -> tuple[bool, bool]:
        """Stop: drop the waiting item, let the running one finish (up to ``timeout``).

        Returns (dropped a waiting item, thread finished).
        """
        with self._cv:
            dropped = self._has_item
            self._slot, self._has_item = None, False
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout)
        return dropped, not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._has_item or self._closed)
                if self._closed:
                    self._busy = False
                    self._cv.notify_all()
                    return
                item = self._slot
                self._slot, self._has_item = None, False
                self._busy = True
            try:
                self._handler(item)  # type: ignore[arg-type]
            except Exception as err:  # noqa: BLE001 - the worker must survive
                self._on_error(err)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
