"""``xmask3d-map``: call the node's map services from a shell (no ros2cli needed).

    xmask3d-map save ~/maps/lab.safetensors     # the whole map, for `load` on a later run
    xmask3d-map save /tmp/lab.ply                # points labelled with the current query
    xmask3d-map load ~/maps/lab.safetensors
    xmask3d-map clear
    xmask3d-map save lab.safetensors --ros-args -r __ns:=/robot1

Paths are sent as absolute paths of this shell's working directory (the node writes and reads
them on its own machine). Exit status: 0 when the node did it, 1 when it refused (its message
is printed) or did not answer within ``--timeout`` seconds, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

__all__ = ["main"]

_RESEND_S = 10.0  # seconds without an answer before the request is sent again


def main(argv: Sequence[str] | None = None) -> int:
    import rclpy
    from rclpy.node import Node

    from xmask3d_ros.ros.map_services import resolve_map_path
    from xmask3d_ros.srv import ClearMap, LoadMap, SaveMap

    argv = list(sys.argv[1:] if argv is None else argv)
    own = rclpy.utilities.remove_ros_args(["xmask3d-map", *argv])[1:]
    p = argparse.ArgumentParser(prog="xmask3d-map", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("save", "load", "clear"))
    p.add_argument("path", nargs="?", help="map file (.safetensors; save also takes .ply)")
    p.add_argument("--node", default="xmask3d", help="the perception node's name (default xmask3d)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the node")
    args = p.parse_args(own)
    if (args.path is None) != (args.action == "clear"):
        p.error("save and load take a path; clear takes none")
    srv_type = {"save": SaveMap, "load": LoadMap, "clear": ClearMap}[args.action]
    request = srv_type.Request()
    if args.path is not None:
        try:
            request.path = str(resolve_map_path(args.path))
        except ValueError as err:
            p.error(str(err))
    rclpy.init(args=["xmask3d-map", *argv])
    node = Node("xmask3d_map_cli")
    try:
        client = node.create_client(srv_type, f"{args.node}/{args.action}_map")
        end = time.monotonic() + args.timeout
        if not client.wait_for_service(timeout_sec=args.timeout):
            print(f"no service {client.srv_name} after {args.timeout:g} s", file=sys.stderr)
            return 1
        # A request sent the moment the service is discovered can lose its response (the
        # server's response writer has not matched us yet); the three requests are idempotent,
        # so one without an answer after _RESEND_S is sent again (a save or load of a large
        # map on a slow disk may then run twice, which is harmless).
        while True:
            future = client.call_async(request)
            wait = min(_RESEND_S, max(0.0, end - time.monotonic()))
            rclpy.spin_until_future_complete(node, future, timeout_sec=wait)
            if future.done() or time.monotonic() >= end:
                break
            client.remove_pending_request(future)
        if not future.done():
            print(f"{client.srv_name} did not answer within {args.timeout:g} s", file=sys.stderr)
            return 1
        res = future.result()
        print(res.message, file=sys.stdout if res.success else sys.stderr)
        return 0 if res.success else 1
    except KeyboardInterrupt:
        return 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
