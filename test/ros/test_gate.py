"""CallbackGate: a closing lifecycle transition waits for the callbacks inside, then refuses."""

from __future__ import annotations

import threading
import time

from xmask3d_ros.ros.gate import CallbackGate, gated


class _Worker:
    def __init__(self) -> None:
        self.gate = CallbackGate(is_open=True)
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished: list[str] = []

    @gated("gate", closed=lambda self, tag: f"refused {tag}")
    def work(self, tag: str) -> str:
        self.started.set()
        self.release.wait(10.0)
        self.finished.append(tag)
        return f"done {tag}"


def test_close_waits_for_the_callback_inside_then_refuses() -> None:
    w = _Worker()
    results: list[str] = []
    t = threading.Thread(target=lambda: results.append(w.work("a")))
    t.start()
    assert w.started.wait(10.0)
    closed_after: list[float] = []

    def close() -> None:
        t0 = time.monotonic()
        assert w.gate.close(10.0)
        closed_after.append(time.monotonic() - t0)

    c = threading.Thread(target=close)
    c.start()
    time.sleep(0.3)
    assert not closed_after, "close() returned while a callback was inside"
    assert w.work("b") == "refused b"  # the gate refuses new callbacks while closing
    w.release.set()
    c.join(10.0)
    t.join(10.0)
    assert results == ["done a"] and w.finished == ["a"] and closed_after[0] >= 0.3
    w.gate.open()
    assert w.work("c") == "done c"


def test_close_times_out_when_a_callback_never_leaves() -> None:
    w = _Worker()
    t = threading.Thread(target=w.work, args=("stuck",))
    t.start()
    assert w.started.wait(10.0)
    assert w.gate.close(0.2) is False
    w.release.set()
    t.join(10.0)
    assert w.gate.close(0.2) is True
