"""``xmask3d-replay BAG --out DIR``: a rosbag2 through the node's ingest and the PerceptionPipeline.

Writes into ``--out`` (each file atomically): ``map.ply``, ``semantic_map.mcap/`` (semantic cloud
and query result), ``topdown.png`` (+ ``topdown_gt.png`` with ``--gt``), ``metrics.json`` /
``metrics.md`` with ``--gt``, and ``report.json`` (frames read / synced / dropped by reason,
keyframes, time per stage). Exit codes: 0 done, 2 bad arguments or unusable bag.

Segmenters: ``ground_truth`` is a named test double (class of the nearest ``.gt.npz`` point,
for synthetic bags) and must be asked for explicitly; ``xmask3d`` needs the demo checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from xmask3d_ros.config.perception import load_perception_config
from xmask3d_ros.config.schema import ConfigError
from xmask3d_ros.data.ground_truth import ground_truth_path, load_ground_truth
from xmask3d_ros.replay.reader import BagError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xmask3d-replay", description=__doc__.split("\n")[0])
    p.add_argument("bag", type=Path, help="rosbag2 folder (MCAP or sqlite3)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--config", type=Path, help="perception config YAML (default: built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set mapping.voxel_size_m=0.05 (repeatable)")
    p.add_argument("--labels", help="comma-separated vocabulary to query (default: the GT classes)")
    p.add_argument("--novel", default="", help="comma-separated labels counted as novel in the metrics")
    p.add_argument("--gt", type=Path, help="ground truth .gt.npz (default for ground_truth: beside the bag)")
    p.add_argument("--segmenter", choices=("ground_truth", "xmask3d"), required=True,
                   help="ground_truth: test double from the .gt.npz (synthetic bags); xmask3d: the model")
    p.add_argument("--rgb-topic", help="colour topic (default: found by type)")
    p.add_argument("--depth-topic", help="depth topic (default: found by type)")
    p.add_argument("--info-topic", help="camera_info topic (default: found by type)")
    p.add_argument("--start", type=float, default=0.0, help="seconds from the bag start to skip")
    p.add_argument("--duration", type=float, help="seconds to replay (default: all)")
    p.add_argument("--every", type=int, default=1, help="use every N-th posed frame")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _err(text: str) -> int:
    print(f"xmask3d-replay: {text}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.every < 1:
        return _err("--every must be >= 1")
    try:
        cfg = load_perception_config(args.config, args.overrides)
    except ConfigError as err:
        return _err(str(err))
    gt_file = args.gt or (ground_truth_path(args.bag) if args.segmenter == "ground_truth" else None)
    gt = None
    if gt_file is not None:
        if not Path(gt_file).exists():
            return _err(f"ground truth {gt_file} does not exist (--gt)")
        gt = load_ground_truth(gt_file)
    if args.segmenter == "xmask3d":
        return _err("--segmenter xmask3d needs the demo checkpoint, which is not available yet; "
                    "use --segmenter ground_truth with a synthetic bag")
    from xmask3d_ros.replay.gt_segmenter import ground_truth_models
    from xmask3d_ros.replay.outputs import (
        map_coverage,
        map_metrics,
        write_metrics,
        write_output_bag,
        write_ply,
        write_topdown_png,
    )
    from xmask3d_ros.replay.run import replay_bag

    if gt is None:
        return _err("--segmenter ground_truth needs ground truth (--gt or a .gt.npz beside the bag)")
    segmenter, encoder = ground_truth_models(gt)
    print(f"segmenter: ground_truth (TEST DOUBLE: labels read from {gt_file}, not a model)")
    labels = [s.strip() for s in args.labels.split(",") if s.strip()] if args.labels else \
        [str(n) for n in gt.class_names]
    topics = {k: v for k, v in (("rgb", args.rgb_topic), ("depth", args.depth_topic),
                                ("camera_info", args.info_topic)) if v}
    bar = tqdm(unit="frame", disable=args.quiet, desc="replay")
    try:
        rep = replay_bag(args.bag, cfg, segmenter=segmenter, text_encoder=encoder, labels=labels,
                         start_s=args.start, duration_s=args.duration, every=args.every,
                         topics=topics, progress=bar.update)
    except BagError as err:
        bar.close()
        return _err(str(err))
    bar.close()
    for note in rep.notes:
        print(f"topics: {note}")
    print(f"topics: {rep.topics.describe()}")
    print(rep.summary())
    out: Path = args.out
    if rep.answer is None or rep.snapshot.size == 0:
        return _err(f"no map was built ({rep.summary()}); nothing written")
    written = [write_ply(out / "map.ply", rep.answer), write_output_bag(out / "semantic_map.mcap", rep.answer),
               write_topdown_png(out / "topdown.png", rep.answer.positions, rep.answer.voxel_label, labels)]
    extra = {}
    if gt is not None:
        index = {n: i for i, n in enumerate(labels)}
        names = [str(gt.class_names[i]) if i < len(gt.class_names) else "" for i in gt.label_synthetic]
        gt_idx = np.array([index.get(n, 65535) for n in names], dtype=np.int64)
        written.append(write_topdown_png(out / "topdown_gt.png", gt.points, gt_idx, labels,
                                         title="ground truth (top-down)"))
        novel = [s.strip() for s in args.novel.split(",") if s.strip()]
        res = map_metrics(rep.answer, labels, gt.points, names, novel=novel)
        coverage = map_coverage(rep.answer.positions, gt.points, 2.0 * rep.snapshot.voxel_size_m)
        written += list(write_metrics(out, res, {"gt_coverage": coverage}))
        extra = {**res.as_dict(), "gt_coverage": coverage}
        print(f"GT points within 2 voxels of the map: {100 * coverage:.1f} %")
        from xmask3d_ros.metrics.report import markdown_table

        print(markdown_table(res, "Replay metrics"))
    report = {"bag": str(args.bag), "segmenter": "ground_truth (test double)", "topics": rep.topics.describe(),
              "notes": rep.notes, "messages": rep.messages, "frames_read": rep.frames_read,
              "frames_synced": rep.frames_synced, "frames_posed": rep.frames_posed,
              "frames_used": rep.frames_used, "keyframes": rep.keyframes, "dropped": rep.dropped,
              "timings_ms": rep.timings_ms, "voxels": rep.snapshot.size, "wall_s": rep.wall_s,
              "metrics": extra or None}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".report.json.partial"
    tmp.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    tmp.replace(out / "report.json")
    written.append(out / "report.json")
    for p in written:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
