"""Synthetic-room rendering throughput, next to peers measured in the same run.

- full frames (RGB + depth + labels + instances) at 640x480 and 320x240 with screen-space
  culling (the product path) vs the naive loop that tests every ray against every primitive;
- ray casting alone (depth + hit index) vs the same naive loop, and vs Open3D's
  ``RaycastingScene`` on the same room as triangles when open3d is importable;
- ground-truth surface sampling and rosbag2 writing (serialisation + MCAP) per frame.

Poses come from the camera paths of several seeded rooms. Writes bench/results/render.md and
prints it. Usage: python bench/bench_render.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xmask3d_ros.data.synthetic import generate_room, render_frame  # noqa: E402
from xmask3d_ros.data.synthetic.render import raycast  # noqa: E402
from xmask3d_ros.data.synthetic.shapes import Box, Cylinder, Quad  # noqa: E402
from xmask3d_ros.replay.bag_writer import SyntheticBagWriter  # noqa: E402


def per_call(fn: Callable[[Any], Any], items: list[Any], repeat: int) -> float:
    """Median over ``repeat`` passes of the mean seconds per item."""
    fn(items[0])
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for it in items:
            fn(it)
        times.append((time.perf_counter() - t0) / len(items))
    return statistics.median(times)


def _triangles(room: Any, segments: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """The room as a triangle mesh (boxes: 12 triangles, cylinders: ``4 * segments``)."""
    verts, tris = [], []
    for part in room.parts:
        prim, n0 = part.prim, sum(len(v) for v in verts)
        if isinstance(prim, Quad):
            local = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]]) * prim.half
            faces = [[0, 1, 2], [0, 2, 3]]
        elif isinstance(prim, Box):
            local = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * prim.half
            faces = [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                     [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
        else:
            assert isinstance(prim, Cylinder)
            a = np.linspace(0, 2 * np.pi, segments, endpoint=False)
            ring = np.column_stack([np.cos(a), np.sin(a)]) * prim.half[0]
            local = np.vstack([np.column_stack([ring, np.full(segments, -prim.half[2])]),
                               np.column_stack([ring, np.full(segments, prim.half[2])]),
                               [[0, 0, -prim.half[2]], [0, 0, prim.half[2]]]])
            faces = []
            for k in range(segments):
                k2 = (k + 1) % segments
                faces += [[k, k2, segments + k2], [k, segments + k2, segments + k],
                          [2 * segments, k2, k], [2 * segments + 1, segments + k, segments + k2]]
        verts.append(local @ prim.R.T + prim.center)
        tris.append(np.asarray(faces) + n0)
    return np.vstack(verts).astype(np.float32), np.vstack(tris).astype(np.uint32)


def open3d_peer(room: Any, poses: np.ndarray, K: np.ndarray, w: int, h: int
                ) -> Callable[[np.ndarray], Any] | None:
    try:
        import open3d as o3d  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - any import failure means "no peer"
        return None
    v, t = _triangles(room)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(v), o3d.core.Tensor(t))
    u, vv = np.meshgrid(np.arange(w), np.arange(h))
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones(u.shape)], -1)

    def cast(T: np.ndarray) -> Any:
        d = (d_cam @ T[:3, :3].T).astype(np.float32)
        rays = np.concatenate([np.broadcast_to(T[:3, 3].astype(np.float32), d.shape), d], -1)
        return scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()

    return cast


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer poses and repeats")
    args = ap.parse_args(argv)
    repeat = 2 if args.quick else 3
    load_start = os.getloadavg()[0]
    per_room = 2 if args.quick else 4
    rooms = [generate_room(seed) for seed in range(3)]
    jobs = [(r, T) for r in rooms for T in r.camera_poses(80)[:: 80 // per_room]]
    rows: list[tuple[str, str, str, str, str]] = []

    def fps(s: float) -> str:
        return f"{1.0 / s:.1f}"

    for w, h in ((640, 480), (320, 240)):
        K = rooms[0].intrinsics(w, h)
        ours = per_call(lambda j: render_frame(j[0], j[1], K, w, h), jobs, repeat)
        naive = per_call(lambda j: render_frame(j[0], j[1], K, w, h, cull=False), jobs, repeat)
        rows.append((f"render frame {w}x{h} (rgb, depth, label, instance)", "frames/s",
                     fps(ours), fps(naive), f"{naive / ours:.1f}x"))
        prims = {id(r): [p.prim for p in r.parts] for r in rooms}
        ours_rc = per_call(lambda j: raycast(prims[id(j[0])], j[1], K, w, h), jobs, repeat)
        naive_rc = per_call(lambda j: raycast(prims[id(j[0])], j[1], K, w, h, cull=False), jobs, repeat)
        rows.append((f"ray cast only {w}x{h} (depth + hit index)", "frames/s", fps(ours_rc),
                     fps(naive_rc), f"{naive_rc / ours_rc:.1f}x"))
        peer = open3d_peer(rooms[0], rooms[0].camera_poses(1), K, w, h)
        if peer is not None:
            r0 = [T for r, T in jobs if r is rooms[0]]
            o3d_s = per_call(peer, r0, repeat)
            own = per_call(lambda T: raycast(prims[id(rooms[0])], T, K, w, h), r0, repeat)
            rows.append((f"ray cast {w}x{h}, room 0, vs Open3D RaycastingScene", "frames/s",
                         fps(own), fps(o3d_s), f"{o3d_s / own:.2f}x"))
    n_pts = len(rooms[0].sample_surface_points(0.03))
    sample_s = per_call(lambda r: r.sample_surface_points(0.03), rooms, 1)
    rows.append((f"surface samples, 3 cm spacing (~{n_pts // 1000}k points/room)", "rooms/s",
                 f"{1 / sample_s:.2f}", "-", "-"))
    room = rooms[0]
    K = room.intrinsics(640, 480)
    frames = [render_frame(room, T, K, 640, 480) for T in room.camera_poses(10)]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with SyntheticBagWriter(Path(tmp) / "b", K, 640, 480, storage="mcap") as bag:
            for i, f in enumerate(frames):
                bag.write_frame(1_000_000_000 + i * 100_000_000, f)
        write_s = (time.perf_counter() - t0) / len(frames)
    rows.append(("bag write 640x480 (TF, info, rgb8, 16UC1; MCAP)", "frames/s", fps(write_s), "-", "-"))

    open3d_note = "Open3D RaycastingScene on the room as triangles (cylinders: 24 segments)" \
        if any("Open3D" in r[0] for r in rows) else "Open3D not importable here (no open3d peer row)"
    lines = [
        "# Synthetic-room rendering benchmarks",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"numpy {np.__version__}; {datetime.date.today()}; median of {repeat} passes over "
        f"{len(jobs)} poses from 3 seeded rooms (single thread numpy, CPU). 1-min load average "
        f"{load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end (the machine is shared: "
        "compare within a row, not across runs).",
        "",
        "| measurement | unit | xmask3d_ros | peer | speed-up |",
        "|---|---|---:|---:|---:|",
        *[f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows],
        "",
        "Peers: the same renderer with culling off (every ray tested against every primitive); "
        f"{open3d_note}. A full frame includes procedural texturing and lighting of every pixel.",
    ]
    text = "\n".join(lines) + "\n"
    out = Path(__file__).resolve().parent / "results" / "render.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
