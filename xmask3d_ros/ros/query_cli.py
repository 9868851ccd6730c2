"""``xmask3d-query``: publish a TextQuery and print the objects the node finds (no ros2cli needed).

    xmask3d-query chair "potted plant" [--mode highlight] [--min-score 0.25] [--timeout 10]
    xmask3d-query "chair, table" --ros-args -r __ns:=/robot1

Exit status: 0 with an answer, 1 when none arrived within ``--timeout`` seconds, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

__all__ = ["format_result", "main"]


def _labels(words: Sequence[str]) -> list[str]:
    out: list[str] = []
    for w in words:
        for part in w.split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def format_result(res: object) -> str:
    """Human-readable text of a QueryResult."""
    lines = [f"map voxels: {res.map_voxels}  min_score: {res.min_score:.3f}  "  # type: ignore[attr-defined]
             f"latency: {res.latency_ms:.1f} ms  frame: {res.header.frame_id}"]  # type: ignore[attr-defined]
    for r in res.results:  # type: ignore[attr-defined]
        lines.append(f"{r.label!r} (index {r.label_index}): {r.num_voxels} voxels, "
                     f"max score {r.max_score:.3f}, {len(r.objects)} objects")
        for o in r.objects:
            c = o.centroid
            lines.append(f"    score {o.score:.3f}  centroid ({c.x:.2f}, {c.y:.2f}, {c.z:.2f})  "
                         f"{o.num_voxels} voxels")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from xmask3d_ros.msg import QueryResult, TextQuery
    from xmask3d_ros.ros import qos

    argv = list(sys.argv[1:] if argv is None else argv)
    own = rclpy.utilities.remove_ros_args(["xmask3d-query", *argv])[1:]
    p = argparse.ArgumentParser(prog="xmask3d-query", description=__doc__.split("\n\n")[0])
    p.add_argument("labels", nargs="+", help="class names (comma-separated or separate words)")
    p.add_argument("--mode", choices=("segment", "highlight"), default="segment")
    p.add_argument("--min-score", type=float, default=0.0, help="0 = the node's query.min_score")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer")
    args = p.parse_args(own)
    labels = _labels(args.labels)
    if not labels:
        p.error("no labels")
    rclpy.init(args=["xmask3d-query", *argv])
    node = Node("xmask3d_query")
    got: list[QueryResult] = []
    try:
        def on_result(msg: QueryResult) -> None:
            if [r.label for r in msg.results] == labels:
                got.append(msg)

        node.create_subscription(QueryResult, "query_result", on_result, qos.latched_qos())
        pub = node.create_publisher(TextQuery, "query", qos.latched_qos())
        ex = SingleThreadedExecutor()
        ex.add_node(node)
        end = time.monotonic() + args.timeout
        while pub.get_subscription_count() == 0 and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
        if pub.get_subscription_count() == 0:
            print(f"no node subscribes to {pub.topic_name} after {args.timeout:g} s", file=sys.stderr)
            return 1
        got.clear()  # an older latched answer with the same labels is not ours
        msg = TextQuery(labels=labels, mode=TextQuery.MODE_HIGHLIGHT if args.mode == "highlight"
                        else TextQuery.MODE_SEGMENT, min_score=args.min_score)
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
        while not got and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
        if not got:
            print(f"no answer on query_result within {args.timeout:g} s", file=sys.stderr)
            return 1
        print(format_result(got[-1]))
        return 0
    except KeyboardInterrupt:
        return 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
