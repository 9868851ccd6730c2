"""``DrainingExecutor`` (the node's executor): fair like MultiThreadedExecutor, and its shutdown
waits for the callbacks in flight (rclpy 7.1's does not)."""

from __future__ import annotations

import gc
import threading
import time
import uuid

import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 Jazzy wheels not installed")

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from xmask3d_ros.ros.executor import DrainingExecutor  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture
def ctx():
    c = rclpy.Context()
    rclpy.init(context=c, args=[])
    yield c
    rclpy.try_shutdown(context=c)


def _node(ctx, name: str):
    from rclpy.node import Node

    return Node(f"{name}_{uuid.uuid4().hex[:6]}", context=ctx)


def test_busy_timers_do_not_starve_a_subscription(ctx) -> None:
    """Timers come first in each wait's ready list; a subscription listed after them must still be
    served (a new wait per spin_once, as with a fresh wait condition each call, starved it)."""
    node = _node(ctx, "exec_fair")
    for _ in range(3):
        node.create_timer(0.001, lambda: time.sleep(0.0005),
                          callback_group=MutuallyExclusiveCallbackGroup())
    got: list[str] = []
    node.create_subscription(String, "fair", lambda m: got.append(m.data), 1000,
                             callback_group=MutuallyExclusiveCallbackGroup())
    pub = node.create_publisher(String, "fair", 1000)
    ex = DrainingExecutor(num_threads=4, context=ctx)
    ex.add_node(node)
    try:
        n = 200
        for i in range(n):
            pub.publish(String(data=str(i)))
        end = time.monotonic() + 10.0
        while len(got) < n and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
        assert len(got) == n
    finally:
        ex.shutdown(timeout_sec=5.0)
        node.destroy_node()


def test_shutdown_waits_for_the_callback_in_flight(ctx, capfd) -> None:
    node = _node(ctx, "exec_drain")
    started, finished = threading.Event(), threading.Event()

    def slow(_msg: String) -> None:
        started.set()
        time.sleep(0.5)
        finished.set()

    node.create_subscription(String, "drain", slow, 10)
    node.create_timer(0.002, lambda: None)  # its handler is often in flight at shutdown too
    pub = node.create_publisher(String, "drain", 10)
    ex = DrainingExecutor(num_threads=4, context=ctx)
    ex.add_node(node)
    pub.publish(String(data="x"))
    end = time.monotonic() + 10.0
    while not started.is_set() and time.monotonic() < end:
        ex.spin_once(timeout_sec=0.05)
    assert started.is_set()
    assert ex.in_flight() >= 1
    assert ex.shutdown(timeout_sec=5.0) is True
    assert finished.is_set()  # shutdown returned only after the callback
    assert ex.in_flight() == 0 and ex.shutdown_errors == []
    node.destroy_node()
    del ex
    gc.collect()
    err = capfd.readouterr().err
    assert "never retrieved" not in err and "never awaited" not in err, err


def test_callback_exception_is_raised_from_spin_once(ctx) -> None:
    node = _node(ctx, "exec_raise")

    def boom() -> None:
        raise RuntimeError("boom")

    node.create_timer(0.01, boom)
    ex = DrainingExecutor(num_threads=2, context=ctx)
    ex.add_node(node)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            end = time.monotonic() + 10.0
            while time.monotonic() < end:
                ex.spin_once(timeout_sec=0.05)
    finally:
        ex.shutdown(timeout_sec=5.0)
        node.destroy_node()
