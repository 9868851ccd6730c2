"""``DrainingExecutor``: rclpy's MultiThreadedExecutor, but its shutdown waits for callbacks in flight.

rclpy 7.1 (Jazzy) ``Executor.shutdown(timeout_sec)`` sets ``_is_shutdown`` and then tests
``if not self._is_shutdown`` before waiting, so it never waits for the callbacks running in the
MultiThreadedExecutor's thread pool: it destroys its guard condition at once, and a callback
still in a worker thread fails on ``gc.trigger()`` with ``InvalidHandle: cannot use Destroyable
because destruction was requested``. That exception is stored in the rclpy Task and printed at
garbage collection as "The following exception was never retrieved: ...". Destroying the node
right after has the same race with the callback's own subscription or timer.

This executor is built on the public ``Executor.wait_for_ready_callbacks`` and its own thread
pool, as MultiThreadedExecutor is, and :meth:`shutdown` first stops the pool and waits for the
callbacks already running (not yet started ones are cancelled before they take anything), then
shuts the rclpy executor down. Exceptions raised by callbacks are re-raised from
:meth:`spin_once`, as MultiThreadedExecutor does.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

from rclpy.executors import (
    ConditionReachedException,
    Executor,
    ShutdownException,
    TimeoutException,
)

__all__ = ["DrainingExecutor"]


def _never() -> bool:
    """The wait condition of plain spin_once. It must be the SAME object on every call:
    Executor.wait_for_ready_callbacks starts a new wait (dropping the entities the last wait found
    ready but not yet handed out) whenever its arguments differ from the previous call's, which
    starves the entities listed last (a fresh lambda per call did that to the /tf subscription)."""
    return False


class DrainingExecutor(Executor):
    """Runs ready callbacks on ``num_threads`` worker threads; see the module docstring."""

    def __init__(self, num_threads: int = 4, *, context: Any = None) -> None:
        super().__init__(context=context)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, int(num_threads)), thread_name_prefix="xmask3d_cb")
        self._running: dict[concurrent.futures.Future, Any] = {}  # pool future -> rclpy Task
        self._running_lock = threading.Lock()
        self._closed = False
        self.shutdown_errors: list[BaseException] = []  # raised by callbacks during shutdown()

    def spin_once(self, timeout_sec: float | None = None) -> None:
        """Wait up to ``timeout_sec`` for one ready callback and start it on a worker thread."""
        self._spin_once_impl(timeout_sec, _never)

    def spin_once_until_future_complete(self, future: Any, timeout_sec: float | None = None) -> None:
        future.add_done_callback(lambda _f: self.wake())
        self._spin_once_impl(timeout_sec, future.done)

    def _spin_once_impl(self, timeout_sec: float | None, condition: Any) -> None:
        self._raise_finished()
        if self._closed:
            return
        try:
            handler, _entity, _node = self.wait_for_ready_callbacks(timeout_sec, None, condition)
        except (TimeoutException, ShutdownException, ConditionReachedException):
            return
        with self._running_lock:
            if self._closed:  # shut down while we waited: never start it
                return
            # rclpy hands an unfinished task out again until it starts executing: a task still
            # queued in the pool must not be submitted twice (the second copy would run a
            # coroutine that is already executing)
            if any(h is handler and not f.done() for f, h in self._running.items()):
                return
            fut = self._pool.submit(handler)
            self._running[fut] = handler

    def _raise_finished(self) -> None:
        """Forget finished callbacks; re-raise the first exception one of them raised."""
        with self._running_lock:
            done = [(f, h) for f, h in self._running.items() if f.done()]
            for f, _h in done:
                del self._running[f]
        for _f, handler in done:
            if handler.done():
                handler.result()  # raises the callback's exception, as MultiThreadedExecutor does

    def in_flight(self) -> int:
        """Callbacks submitted to the worker threads and not finished yet."""
        with self._running_lock:
            return sum(not f.done() for f in self._running)

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        """Stop taking work, wait up to ``timeout_sec`` for running callbacks, then shut down.

        Returns False if callbacks were still running when the time was up (they then may fail on
        destroyed handles, as with rclpy's own executors).
        """
        with self._running_lock:
            self._closed = True
            running = list(self._running.items())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for f, handler in running:
            if f.cancelled() and not handler.executing() and not handler.done():
                try:
                    handler.cancel()  # closes its coroutine: never started, nothing taken
                except ValueError:  # started meanwhile on another worker: waited for below
                    pass
        pending = [f for f, _h in running if not f.cancelled()]
        _done, not_done = concurrent.futures.wait(pending, timeout=timeout_sec)
        for f, handler in running:
            if f.done() and not f.cancelled() and handler.done():
                err = handler.exception()  # retrieved here, so rclpy does not print it at exit
                if err is not None:
                    self.shutdown_errors.append(err)
        super().shutdown(timeout_sec=0)
        return not not_done
