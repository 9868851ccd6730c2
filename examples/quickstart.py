"""Map a synthetic room with the tiny XMask3D model and ask it a question, in plain Python.

    python examples/quickstart.py [--frames 12] [--size 160x120]

The tiny model is randomly initialised (no weights exist offline), so its answers are not
meaningful yet; the point is the API: frames in, a vocabulary chosen at query time, objects out.
"""

from __future__ import annotations

import argparse

import numpy as np

from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.config.paths import resolve_model_config
from xmask3d_ros.config.perception import load_perception_config
from xmask3d_ros.config.schema import load_config
from xmask3d_ros.data.synthetic import generate_room, render_frame
from xmask3d_ros.geometry.camera import PinholeCamera
from xmask3d_ros.geometry.frame import PosedFrame, RgbdFrame
from xmask3d_ros.geometry.transforms import SE3
from xmask3d_ros.pipeline import PerceptionPipeline
from xmask3d_ros.pipeline.xmask3d_segmenter import ClipTextEncoder, XMask3DSegmenter


def synthetic_frames(n_frames: int, width: int, height: int, seed: int = 0) -> list[PosedFrame]:
    """Posed RGB-D frames of one seeded synthetic room (exact poses, map frame = room frame)."""
    room = generate_room(seed)
    K = room.intrinsics(width, height)
    camera = PinholeCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2], width=width, height=height)
    frames = []
    for i, T_world_cam in enumerate(room.camera_poses(n_frames)):
        rendered = render_frame(room, T_world_cam, K, width, height)
        rgbd = RgbdFrame(rendered.rgb, rendered.depth_m, camera, stamp_ns=i * 100_000_000,
                         frame_id="camera_color_optical_frame")
        frames.append(PosedFrame(rgbd, SE3.from_matrix(T_world_cam)))
    return frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", default="160x120", help="WIDTHxHEIGHT of the rendered frames")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))

    cfg = load_perception_config(None, ["pipeline.mode=sync"])  # deterministic, like replay
    segmenter = XMask3DSegmenter.from_config(load_config(ModelConfig, resolve_model_config("tiny")))
    with PerceptionPipeline(cfg, segmenter, ClipTextEncoder(segmenter.model)) as pipeline:
        for posed in synthetic_frames(args.frames, width, height):
            pipeline.step(posed)  # every frame is integrated; keyframes are segmented
        answer = pipeline.query(["chair", "table", "wall"], mode="segment", min_score=-1.0)
    print(f"map: {answer.map_voxels} voxels, keyframes segmented: {segmenter.calls}")
    for label in answer.results:
        print(f"  {label.label:>6}: {label.num_voxels:6d} voxels, {len(label.objects)} objects")
    assigned = int(np.sum(answer.voxel_label != 0xFFFF))
    print(f"voxels with a label: {assigned}; query took {answer.latency_ms:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
