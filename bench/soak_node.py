"""Soak the installed ``xmask3d_node`` over DDS: N frames as fast as it keeps up, RSS sampled.

Starts ``xmask3d_node --segmenter ground_truth`` (test double, synthetic room 3, 96x72 frames,
as test/ros/test_node_dds.py), publishes ``--frames`` RGB-D + CameraInfo + TF sets (the room's
trajectory replayed in a loop with strictly increasing stamps, so the map stays bounded), samples
the node's RSS every second with psutil, reads its /diagnostics, and writes
``bench/results/soak.md``.

Rate: frames are published back to back; after each one the publisher waits while the node's
``tf_waiting`` + unprocessed backlog (frames sent minus frames the map reports) exceeds
``--max-lag`` frames (default 8, below ``sync.queue_size`` 10: more in flight overflows the
synchroniser's queues and is counted as ``sync_queue_overflow``), so the rate printed is the one the node sustains, not the publisher's.

Not part of the test run. Usage:
    python bench/soak_node.py [--frames 10000] [--max-lag 8] [--domain 88]
(needs ``source scripts/env.sh`` and the colcon install space on PATH).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--max-lag", type=int, default=8,
                    help="frames in flight; keep below sync.queue_size (10) or the sync overflows")
    ap.add_argument("--domain", default=os.environ.get("ROS_DOMAIN_ID", "88"))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "soak.md"))
    args = ap.parse_args()
    os.environ.update(ROS_DOMAIN_ID=str(args.domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")

    import psutil
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import TransformStamped
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from xmask3d_ros.data.synthetic import default_intrinsics, generate_room, render_frame
    from xmask3d_ros.geometry.transforms import SE3
    from xmask3d_ros.msg import QueryResult, TextQuery
    from xmask3d_ros.ros import conversions as conv
    from xmask3d_ros.ros import qos

    seed, W, H, cam = 3, 96, 72, "camera_optical"
    room = generate_room(seed)
    K = default_intrinsics(W, H)
    loop = 60
    times = [0.4 * i for i in range(loop)]
    poses = room.trajectory.poses(times)
    rendered = [render_frame(room, T, K, W, H) for T in poses]
    rgb_bytes = [np.ascontiguousarray(f.rgb).tobytes() for f in rendered]
    depth_bytes = [np.round(f.depth_m * 1000).astype(np.uint16).tobytes() for f in rendered]

    exe = shutil.which("xmask3d_node")
    if not exe:
        sys.exit("xmask3d_node not on PATH: bash scripts/setup.sh && source scripts/env.sh")
    import tempfile

    log = Path(tempfile.mkdtemp(prefix="xmask3d_soak_")) / "node.log"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    print(f"node log: {log}")
    fh = open(log, "w")
    proc = subprocess.Popen(
        [exe, "--segmenter", "ground_truth", "--synthetic-seed", str(seed), "--feature-dim", "64",
         "--ros-args", "-p", "node.input_reliability:=reliable", "-p", "node.input_depth:=20",
         "-p", "node.diagnostics_period_s:=0.5", "-p", "node.publish_rate_hz:=1.0"],
        stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    ps = psutil.Process(proc.pid)
    rss: list[tuple[float, int, int]] = []  # (t, frames sent, rss bytes)
    stop = threading.Event()
    sent = [0]

    def sampler() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            try:
                rss.append((time.monotonic() - t0, sent[0], ps.memory_info().rss))
            except psutil.Error:
                return
            stop.wait(1.0)

    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=[])
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    n = Node(f"xmask3d_soak_{uuid.uuid4().hex[:6]}", context=ctx)
    rel = qos.sensor_qos("reliable", 20)
    pub_rgb = n.create_publisher(Image, "rgb/image", rel)
    pub_depth = n.create_publisher(Image, "depth/image", rel)
    pub_info = n.create_publisher(CameraInfo, "rgb/camera_info", rel)
    pub_tf = n.create_publisher(TFMessage, "/tf", qos.tf_qos())
    pub_q = n.create_publisher(TextQuery, "query", qos.latched_qos())
    diag: dict[str, str] = {}
    results: list[QueryResult] = []

    def on_diag(arr: DiagnosticArray) -> None:
        for st in arr.status:
            diag.update({kv.key: kv.value for kv in st.values})

    n.create_subscription(DiagnosticArray, "/diagnostics", on_diag, qos.diagnostics_qos())
    n.create_subscription(QueryResult, "query_result", results.append, qos.latched_qos())
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(n)

    def spin(cond, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            ex.spin_once(timeout_sec=0.01)
        return cond()

    def dv(key: str, default: float = 0.0) -> float:
        try:
            return float(diag.get(key, default))
        except ValueError:
            return default

    ok = spin(lambda: all(p.get_subscription_count() for p in (pub_rgb, pub_depth, pub_info, pub_tf))
              and "frames" in diag, 60.0)
    if not ok:
        proc.kill()
        sys.exit("node never came up: " + log.read_text()[-2000:])
    threading.Thread(target=sampler, daemon=True).start()
    t_start_ns = time.time_ns()
    info = CameraInfo(width=W, height=H, distortion_model="plumb_bob")
    info.k = [float(x) for x in K.reshape(-1)]
    info.p = [K[0, 0], 0.0, K[0, 2], 0.0, 0.0, K[1, 1], K[1, 2], 0.0, 0.0, 0.0, 1.0, 0.0]
    info.d = [0.0] * 5
    max_vox = 0
    started = time.monotonic()
    for i in range(args.frames):
        k = i % loop
        stamp = t_start_ns + i * 50_000_000  # 20 Hz stamp spacing, independent of wall time
        se3 = SE3.from_matrix(poses[k])
        ts = TransformStamped(child_frame_id=cam)
        ts.header = conv.header("odom", stamp)
        t, q = se3.matrix[:3, 3], se3.quaternion
        ts.transform.translation.x, ts.transform.translation.y, ts.transform.translation.z = map(float, t)
        r = ts.transform.rotation
        r.x, r.y, r.z, r.w = map(float, q)
        pub_tf.publish(TFMessage(transforms=[ts]))
        info.header = conv.header(cam, stamp)
        pub_info.publish(info)
        for pub, enc, data, step in ((pub_rgb, "rgb8", rgb_bytes[k], W * 3),
                                     (pub_depth, "16UC1", depth_bytes[k], W * 2)):
            m = Image(height=H, width=W, encoding=enc, is_bigendian=0, step=step)
            m.header = conv.header(cam, stamp)
            m.data = data
            pub.publish(m)
        sent[0] = i + 1
        # back-pressure on the node's own report of integrated frames
        spin(lambda: sent[0] - dv("frames") <= args.max_lag, 5.0)
        max_vox = max(max_vox, int(dv("voxels")))
    spin(lambda: dv("frames") >= sent[0], 10.0)
    elapsed = time.monotonic() - started
    spin(lambda: False, 1.5)
    max_vox = max(max_vox, int(dv("voxels")))
    before = len(results)
    pub_q.publish(TextQuery(labels=["chair", "table"]))
    answered = spin(lambda: len(results) > before, 15.0)
    stop.set()
    alive = proc.poll() is None
    proc.send_signal(signal.SIGINT)
    try:
        rc = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    n.destroy_node()
    rclpy.shutdown(context=ctx)
    fh.close()

    frames_done = int(dv("frames"))
    arr = np.array(rss, dtype=np.float64)
    mb = arr[:, 2] / 2**20
    # slope over the second half (after the map and caches have warmed up) and over all samples
    def slope(a: np.ndarray) -> float:
        if len(a) < 3 or np.ptp(a[:, 1]) == 0:
            return float("nan")
        return float(np.polyfit(a[:, 1], a[:, 2] / 2**20, 1)[0] * 1000.0)

    half = arr[len(arr) // 2:]
    queue_keys = sorted(k for k in diag if any(s in k for s in ("drop", "overflow", "sync_", "waiting",
                                                                 "decode_error", "bad_", "rejected")))
    lines = [
        "# Soak: installed xmask3d_node over DDS",
        "",
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; `python bench/soak_node.py "
        f"--frames {args.frames} --max-lag {args.max_lag}`.",
        "",
        f"Node: `xmask3d_node --segmenter ground_truth` (test double), synthetic room {seed}, "
        f"{W}x{H} RGB-D, reliable inputs depth 20, pipeline async (default config). The trajectory "
        f"({loop} poses) is replayed in a loop with increasing stamps; the publisher waits while "
        f"more than {args.max_lag} frames are not yet integrated (back-pressure on /diagnostics "
        "`frames`), so the rate below is what the node sustains on this machine.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| frames sent | {sent[0]} |",
        f"| frames integrated (/diagnostics `frames`) | {frames_done} |",
        f"| wall time | {elapsed:.1f} s |",
        f"| sustained rate | {frames_done / elapsed:.1f} frames/s |",
        f"| RSS samples (1 s) | {len(arr)} |",
        f"| RSS first / min / max / last | {mb[0]:.1f} / {mb.min():.1f} / {mb.max():.1f} / {mb[-1]:.1f} MiB |",
        f"| RSS slope, all samples (linear fit vs frames sent) | {slope(arr):+.2f} MiB per 1000 frames |",
        f"| RSS slope, second half | {slope(half):+.2f} MiB per 1000 frames |",
        f"| max voxels seen / `mapping.max_voxels` | {max_vox} / {diag.get('max_voxels', '?')} |",
        f"| keyframes / segmented / dropped keyframes | {diag.get('keyframes')} / "
        f"{diag.get('segmented')} / {diag.get('dropped_keyframes')} |",
        f"| node alive at end, answered a query | {alive}, {answered} |",
        f"| exit code after SIGINT | {rc} |",
        "",
        "Queue / drop counters from the last /diagnostics:",
        "",
        "| key | value |",
        "|---|---|",
        *[f"| {k} | {diag[k]} |" for k in queue_keys],
        "",
    ]
    if args.frames < 10_000:
        lines.append(f"NOTE: shortened run ({args.frames} frames); the full 10,000-frame soak was not "
                     "run for these figures.")
    lines += ["", "Node log tail:", "", "```", *log.read_text().splitlines()[-6:], "```"]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0 if alive and answered and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
