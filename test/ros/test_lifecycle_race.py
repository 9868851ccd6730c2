"""A lifecycle transition while a callback is half way through (in process, real rclpy).

Deactivate destroys the query subscription and cleanup the publishers, but a query callback
already dispatched keeps running; it must finish (its answer published) before cleanup
destroys what it uses, instead of crashing the node on a destroyed publisher (seen once in a
soak run before the callback gate existed).
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 Jazzy wheels not installed")
pytest.importorskip("xmask3d_ros.msg", reason="needs the colcon install space (scripts/test.sh)")

from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402

from xmask3d_ros.config.perception import load_perception_config  # noqa: E402
from xmask3d_ros.msg import TextQuery  # noqa: E402
from xmask3d_ros.pipeline import PerceptionPipeline, TableTextEncoder  # noqa: E402

pytestmark = pytest.mark.ros
SLOW_S = 0.6


class _SlowQueries(PerceptionPipeline):
    """A pipeline whose queries take SLOW_S (a large map on a small machine)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.entered = threading.Event()

    def query(self, *args, **kwargs):
        self.entered.set()
        time.sleep(SLOW_S)
        return super().query(*args, **kwargs)


def test_cleanup_waits_for_a_query_callback_in_flight() -> None:
    from xmask3d_ros.ros.node import PerceptionLifecycleNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=[])
    enc = TableTextEncoder(("chair", "table"), 16)
    cfg = load_perception_config(None)
    node = PerceptionLifecycleNode(lambda c: _SlowQueries(c, None, enc),
                                   node_name=f"xmask3d_race_{uuid.uuid4().hex[:6]}",
                                   defaults=cfg, context=ctx)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        pipeline = node.pipeline
        errors: list[BaseException] = []

        def callback() -> None:  # what the executor does with a dispatched query message
            try:
                node._on_query(TextQuery(labels=["chair", "table"]))
            except BaseException as err:  # noqa: BLE001 - the failure this test is about
                errors.append(err)

        t = threading.Thread(target=callback)
        t.start()
        assert pipeline.entered.wait(10.0)
        t0 = time.monotonic()
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        waited = time.monotonic() - t0
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        t.join(10.0)
        assert not errors, errors
        assert waited > 0.5 * SLOW_S, "deactivate did not wait for the callback inside"
        assert node.counters["queries"] == 1  # the answer was published before teardown
        node._on_query(TextQuery(labels=["chair"]))  # a late callback after cleanup: a no-op
        assert node.counters["queries"] == 1 and node.pipeline is None
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
