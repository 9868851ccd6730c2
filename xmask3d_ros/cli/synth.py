"""``xmask3d-synth``: generate synthetic rooms as ScanNet-layout datasets and/or rosbag2 files.

Output under ``--out``::

    scannet_3d/<split>/sceneXXXX_00_vh_clean_2.pth     ground-truth points, ScanNet-20 labels
    scannet_2d/sceneXXXX_00/{color,depth,pose,label}/  frames (OpenScene layout)
    scannet_2d/intrinsics.txt
    bags/sceneXXXX_00/                                 rosbag2 (MCAP or sqlite3)
    bags/sceneXXXX_00.gt.npz                           ground truth beside the bag

Scene ``i`` uses seed ``--seed + i``; each frame is rendered once and fed to both writers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from xmask3d_ros.config.schema import ConfigError, load_config
from xmask3d_ros.config.synthetic import SyntheticCfg
from xmask3d_ros.data.ground_truth import ground_truth_path, save_ground_truth
from xmask3d_ros.data.synthetic.export import ScanNetSceneWriter
from xmask3d_ros.data.synthetic.scene import generate_room, render_frame
from xmask3d_ros.replay.bag_writer import SyntheticBagWriter, room_ground_truth

__all__ = ["build_parser", "main", "scene_name"]


def scene_name(index: int) -> str:
    """ScanNet-style name of synthetic scene ``index``."""
    return f"scene{index:04d}_00"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xmask3d-synth",
        description="Render seeded synthetic rooms to the ScanNet layout and/or rosbag2 files.",
    )
    p.add_argument("--scenes", type=int, default=1, help="number of rooms (default 1)")
    p.add_argument("--frames", type=int, default=60, help="frames per room (default 60)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the first room (default 0)")
    p.add_argument("--width", type=int, help="image width (default: camera.width of the config)")
    p.add_argument("--height", type=int, help="image height (default: camera.height)")
    p.add_argument("--format", choices=("scannet", "bag", "both"), default="both",
                   help="what to write (default both)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"),
                   help="rosbag2 storage plugin (default: bag.storage of the config, mcap)")
    p.add_argument("--config", type=Path, help="YAML file of SyntheticCfg values")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set camera.fps=15 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.scenes < 1 or args.frames < 1:
        print("xmask3d-synth: --scenes and --frames must be >= 1", file=sys.stderr)
        return 2
    overrides = list(args.overrides)
    if args.width is not None:
        overrides.append(f"camera.width={args.width}")
    if args.height is not None:
        overrides.append(f"camera.height={args.height}")
    if args.storage is not None:
        overrides.append(f"bag.storage={args.storage}")
    try:
        cfg = load_config(SyntheticCfg, args.config, overrides)
    except ConfigError as err:
        print(f"xmask3d-synth: {err}", file=sys.stderr)
        return 2
    want_scannet = args.format in ("scannet", "both")
    want_bag = args.format in ("bag", "both")
    out: Path = args.out
    names = [scene_name(i) for i in range(args.scenes)]
    if want_bag:
        taken = [out / "bags" / n for n in names if (out / "bags" / n).exists()]
        if taken:
            print(f"xmask3d-synth: {taken[0]} exists already; choose another --out or remove it",
                  file=sys.stderr)
            return 2
    w, h = cfg.camera.width, cfg.camera.height
    bar = tqdm(total=args.scenes * args.frames, unit="frame", disable=args.quiet)
    for i, name in enumerate(names):
        room = generate_room(args.seed + i, cfg)
        bar.set_description(f"{name} ({room.room_type})")
        K = room.intrinsics(w, h)
        poses = room.camera_poses(args.frames)
        stamps = [cfg.bag.start_time_ns + round(t * 1e9) for t in room.stamps_s(args.frames)]
        scannet = None
        if want_scannet:
            scannet = ScanNetSceneWriter(out, name, split=cfg.scannet.split,
                                         jpeg_quality=cfg.scannet.jpeg_quality)
            scannet.write_intrinsics(K)
        bag = SyntheticBagWriter(out / "bags" / name, K, w, h, cfg=cfg.bag) if want_bag else None
        try:
            for j, (stamp, T) in enumerate(zip(stamps, poses)):
                frame = render_frame(room, T, K, w, h)
                if scannet is not None:
                    scannet.write_frame(j, frame)
                if bag is not None:
                    bag.write_frame(stamp, frame)
                bar.update(1)
        finally:
            if bag is not None:
                bag.close()
        points = room.sample_surface_points()
        if scannet is not None:
            scannet.write_points(points)
        if bag is not None:
            gt = room_ground_truth(room, bag.poses, bag.stamps_ns, K, w, h, cfg.bag, points)
            save_ground_truth(ground_truth_path(bag.path), gt)
    bar.close()
    if not args.quiet:
        print(f"wrote {args.scenes} scene(s) x {args.frames} frame(s) ({w}x{h}) to {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
