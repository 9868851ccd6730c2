"""A second DDS participant for round-trip tests: echoes xmask3d_ros messages back.

Run as ``python dds_echo_peer.py NAMESPACE COUNT``: subscribes to NAMESPACE/query (TextQuery)
and NAMESPACE/result (QueryResult), republishes each message unchanged on .../query_echo and
.../result_echo, and exits once it has echoed COUNT messages of each type (or after 60 s).
"""

from __future__ import annotations

import sys
import time

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from xmask3d_ros.msg import QueryResult, TextQuery


def main() -> int:
    namespace, count = sys.argv[1], int(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("dds_echo_peer", namespace=namespace)
    qos = QoSProfile(
        depth=count,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
    echoed = {"query": 0, "result": 0}
    pubs = {
        "query": node.create_publisher(TextQuery, "query_echo", qos),
        "result": node.create_publisher(QueryResult, "result_echo", qos),
    }

    def echo(kind: str):
        def callback(msg) -> None:
            pubs[kind].publish(msg)
            echoed[kind] += 1

        return callback

    node.create_subscription(TextQuery, "query", echo("query"), qos)
    node.create_subscription(QueryResult, "result", echo("result"), qos)
    print("ready", flush=True)
    deadline = time.monotonic() + 60.0
    while min(echoed.values()) < count and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    # Stay a moment so the transient-local echoes reach the test's subscriber.
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.shutdown()
    return 0 if min(echoed.values()) >= count else 1


if __name__ == "__main__":
    sys.exit(main())
