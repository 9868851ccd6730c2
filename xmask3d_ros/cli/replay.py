"""``xmask3d-replay BAG --out DIR``: a rosbag2 through the node's ingest and the PerceptionPipeline.

Writes into ``--out`` (each file atomically): ``map.ply``, ``semantic_map.mcap/`` (semantic cloud,
query result and the input's /tf + /tf_static), ``topdown.png`` (+ ``topdown_gt.png`` with
ground truth), ``overlays/*.png`` (keyframe images with the map's labels blended in),
``metrics.json`` / ``metrics.md`` with ground truth, and ``report.json`` (frames read / synced /
dropped by reason, keyframes, time per stage). Exit codes: 0 done, 2 bad arguments, unusable bag
or missing checkpoint.

Segmenters: ``xmask3d`` runs the model of ``--checkpoint`` (default: the project's demo
checkpoint, ``models/demo``); its ``vocabulary.yaml`` (``base:``/``novel:`` name lists) flags which
``--labels`` the model saw in training (any other name is novel). ``ground_truth`` is a named test
double (class of the nearest ``.gt.npz`` point, for synthetic bags) and must be asked for
explicitly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from xmask3d_ros.config.perception import load_perception_config
from xmask3d_ros.config.schema import ConfigError
from xmask3d_ros.data.ground_truth import ground_truth_path, load_ground_truth
from xmask3d_ros.replay.reader import BagError

if TYPE_CHECKING:
    from xmask3d_ros.pipeline import Segmenter, TextEncoder
    from xmask3d_ros.pipeline.xmask3d_segmenter import ClipTextEncoder, XMask3DSegmenter

__all__ = ["build_parser", "checkpoint_vocabulary", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xmask3d-replay", description=__doc__.split("\n")[0])
    p.add_argument("bag", type=Path, help="rosbag2 folder (MCAP or sqlite3)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--config", type=Path, help="perception config YAML (default: built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set mapping.voxel_size_m=0.05 (repeatable)")
    p.add_argument("--labels", help="comma-separated vocabulary to query (default: the GT classes)")
    p.add_argument("--novel", default="", help="comma-separated labels counted as novel in the metrics "
                        "(default with xmask3d: the labels not in the checkpoint's vocabulary.yaml base list)")
    p.add_argument("--gt", type=Path, help="ground truth .gt.npz (default for ground_truth: beside the bag)")
    p.add_argument("--segmenter", choices=("ground_truth", "xmask3d"), required=True,
                   help="ground_truth: test double from the .gt.npz (synthetic bags); xmask3d: the model")
    p.add_argument("--rgb-topic", help="colour topic (default: found by type)")
    p.add_argument("--depth-topic", help="depth topic (default: found by type)")
    p.add_argument("--info-topic", help="camera_info topic (default: found by type)")
    p.add_argument("--start", type=float, default=0.0, help="seconds from the bag start to skip")
    p.add_argument("--duration", type=float, help="seconds to replay (default: all)")
    p.add_argument("--every", type=int, default=1, help="use every N-th posed frame")
    p.add_argument("--checkpoint", type=Path,
                   help="xmask3d: checkpoint folder (config.yaml + model.safetensors [+ vocabulary.yaml]); "
                        "default: the demo checkpoint models/demo")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: OMP_NUM_THREADS, else the number of usable cores)")
    p.add_argument("--overlays", type=int, default=4,
                   help="keyframe images with the map's labels blended in, written to OUT/overlays (default 4; 0 = none)")
    p.add_argument("--save-map", type=Path, metavar="PATH",
                   help="also write the final map as a .safetensors map file (the node's load_map "
                        "service reads it: build a map offline, query it live)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _err(text: str) -> int:
    print(f"xmask3d-replay: {text}", file=sys.stderr)
    return 2


def _usable_cores() -> int:
    """OMP_NUM_THREADS when set (the caller shares the machine), else the cores this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _split(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def checkpoint_vocabulary(folder: Path) -> tuple[list[str], list[str]] | None:
    """``(base, novel)`` names of ``folder/vocabulary.yaml``, or None when it has none.

    Raises ConfigError naming the file when it is not a mapping of name lists."""
    import yaml

    path = folder / "vocabulary.yaml"
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with keys base and novel, got {type(data).__name__}")
    out = []
    for key in ("base", "novel"):
        names = data.get(key, []) or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{path}: {key} must be a list of class names, got {names!r}")
        out.append([n.strip() for n in names])
    return out[0], out[1]


def _load_xmask3d(args: argparse.Namespace, labels: list[str]
                  ) -> tuple[XMask3DSegmenter, ClipTextEncoder, list[str] | None, str]:
    """(segmenter, text encoder, novel names from vocabulary.yaml or None, description).
    Raises ConfigError / WeightsError with a one-line reason."""
    import torch

    from xmask3d_ros.config.paths import demo_checkpoint_dir
    from xmask3d_ros.model.build import from_pretrained
    from xmask3d_ros.model.xmask3d import Vocabulary
    from xmask3d_ros.pipeline.xmask3d_segmenter import ClipTextEncoder, XMask3DSegmenter

    if args.checkpoint is not None:
        folder = args.checkpoint.expanduser()
        if not (folder / "model.safetensors").is_file() and not (folder.is_file() and folder.suffix == ".safetensors"):
            raise ConfigError(f"--checkpoint {folder}: no model.safetensors there (expected a folder written "
                              "by xmask3d-train or xmask3d_ros.model.build.save_pretrained)")
    else:
        try:
            folder = demo_checkpoint_dir()
        except ConfigError as err:
            raise ConfigError(f"the demo checkpoint models/demo is missing ({err}); it is committed with the "
                              "repository (check out the full repository, with models/demo/*.safetensors), "
                              "or pass --checkpoint DIR with a checkpoint written by xmask3d-train") from err
    vocab = checkpoint_vocabulary(folder) if folder.is_dir() else None
    torch.set_num_threads(args.threads or _usable_cores())
    model = from_pretrained(folder)
    novel: list[str] | None = None
    if vocab is not None:
        base = set(vocab[0])
        vocabulary = Vocabulary.from_names(labels, base_names=[n for n in labels if n in base]) if labels else None
        novel = [n for n in labels if n not in base]
        how = (f"vocabulary {folder / 'vocabulary.yaml'}: {len(labels) - len(novel)} base, {len(novel)} novel "
               f"of the {len(labels)} labels" + (f" (novel: {', '.join(novel)})" if novel else ""))
    else:
        vocabulary = None
        how = "no vocabulary.yaml: class-agnostic masks, no base/novel split"
    seg = XMask3DSegmenter(model, vocabulary=vocabulary)
    desc = (f"xmask3d (checkpoint {folder}, config {model.cfg.name}, device {next(model.parameters()).device}, "
            f"{torch.get_num_threads()} threads; {how})")
    return seg, ClipTextEncoder(model), novel, desc


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.every < 1:
        return _err("--every must be >= 1")
    if args.overlays < 0:
        return _err("--overlays must be >= 0")
    if args.threads is not None and args.threads < 1:
        return _err("--threads must be >= 1")
    try:
        cfg = load_perception_config(args.config, args.overrides)
    except ConfigError as err:
        return _err(str(err))
    gt_file = args.gt
    if gt_file is None:  # a synthetic bag's ground truth beside it (required by ground_truth)
        beside = ground_truth_path(args.bag)
        gt_file = beside if args.segmenter == "ground_truth" or beside.exists() else None
    gt = None
    if gt_file is not None:
        if not Path(gt_file).exists():
            return _err(f"ground truth {gt_file} does not exist (--gt)")
        gt = load_ground_truth(gt_file)
        if args.gt is None:
            print(f"ground truth: {gt_file} (found beside the bag)")
    from xmask3d_ros.replay.outputs import (
        map_coverage,
        map_metrics,
        write_metrics,
        write_output_bag,
        write_overlays,
        write_ply,
        write_topdown_png,
    )
    from xmask3d_ros.mapping import MapFileError
    from xmask3d_ros.replay.run import replay_bag

    labels = list(dict.fromkeys(_split(args.labels) or ([str(n) for n in gt.class_names] if gt is not None else [])))
    novel_default: list[str] | None = None
    segmenter: Segmenter
    encoder: TextEncoder
    t0 = time.perf_counter()
    if args.segmenter == "xmask3d":
        from xmask3d_ros.model.errors import WeightsError

        if not labels:
            return _err("--segmenter xmask3d needs --labels (or ground truth whose classes to use)")
        try:
            segmenter, encoder, novel_default, desc = _load_xmask3d(args, labels)
        except (ConfigError, WeightsError, ValueError) as err:
            return _err(f"--segmenter xmask3d: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
        print(f"segmenter: {desc}; loaded in {time.perf_counter() - t0:.1f} s")
        seg_name = "xmask3d"
    else:
        if gt is None:
            return _err("--segmenter ground_truth needs ground truth (--gt or a .gt.npz beside the bag)")
        from xmask3d_ros.replay.gt_segmenter import ground_truth_models

        segmenter, encoder = ground_truth_models(gt)
        print(f"segmenter: ground_truth (TEST DOUBLE: labels read from {gt_file}, not a model)")
        seg_name = "ground_truth (test double)"
    print(f"labels ({len(labels)}): {', '.join(labels)}")
    topics = {k: v for k, v in (("rgb", args.rgb_topic), ("depth", args.depth_topic),
                                ("camera_info", args.info_topic)) if v}
    bar = tqdm(unit="frame", disable=args.quiet, desc="replay")
    try:
        rep = replay_bag(args.bag, cfg, segmenter=segmenter, text_encoder=encoder, labels=labels,
                         start_s=args.start, duration_s=args.duration, every=args.every,
                         topics=topics, progress=bar.update, keep_tf=True,
                         keep_keyframes=4 * args.overlays, save_map=args.save_map)
    except (BagError, MapFileError) as err:
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
    fps = rep.frames_used / max(rep.wall_s, 1e-9)
    print(f"replay: {rep.frames_used} frames in {rep.wall_s:.1f} s ({fps:.2f} frames/s), "
          f"{rep.keyframes} keyframes")
    t_out = time.perf_counter()
    written = [write_ply(out / "map.ply", rep.answer),
               write_output_bag(out / "semantic_map.mcap", rep.answer, tf_messages=rep.tf_messages,
                                tf_qos=rep.tf_qos),
               write_topdown_png(out / "topdown.png", rep.answer.positions, rep.answer.voxel_label, labels)]
    if args.overlays:
        from xmask3d_ros.replay.run import evenly_spaced

        written += write_overlays(out / "overlays", evenly_spaced(rep.keyframe_frames, args.overlays),
                                  rep.answer, labels, rep.snapshot.voxel_size_m)
    if rep.map_file is not None:
        written.append(rep.map_file.path)
    extra = {}
    if gt is not None:
        index = {n: i for i, n in enumerate(labels)}
        names = [str(gt.class_names[i]) if i < len(gt.class_names) else "" for i in gt.label_synthetic]
        gt_idx = np.array([index.get(n, 65535) for n in names], dtype=np.int64)
        written.append(write_topdown_png(out / "topdown_gt.png", gt.points, gt_idx, labels,
                                         title="ground truth (top-down)"))
        novel = _split(args.novel) if args.novel or novel_default is None else novel_default
        res = map_metrics(rep.answer, labels, gt.points, names, novel=novel)
        seen_m = 2.0 * rep.snapshot.voxel_size_m
        coverage = map_coverage(rep.answer.positions, gt.points, seen_m)
        seen = map_metrics(rep.answer, labels, gt.points, names, novel=novel, seen_within_m=seen_m)
        seen_row = {k: v for k, v in seen.as_dict().items() if k.startswith(("miou", "hiou"))}
        note = (f"Every GT point counts; {100 * coverage:.1f} % of them have a map voxel within 2 "
                "voxels. Only those (what the camera saw): "
                + ", ".join(f"{k} {100 * v:.1f}" for k, v in
                            (("hIoU", seen.hiou), ("mIoU base", seen.miou_base),
                             ("mIoU novel", seen.miou_novel), ("mIoU all", seen.miou_all))) + ".")
        written += list(write_metrics(out, res, {"gt_coverage": coverage, "seen_points": seen_row},
                                      note))
        extra = {**res.as_dict(), "gt_coverage": coverage, "seen_points": seen_row}
        from xmask3d_ros.metrics.report import markdown_table

        print(markdown_table(res, "Replay metrics") + "\n" + note)
    report = {"bag": str(args.bag), "segmenter": seg_name, "labels": labels, "topics": rep.topics.describe(),
              "notes": rep.notes, "messages": rep.messages, "frames_read": rep.frames_read,
              "frames_synced": rep.frames_synced, "frames_posed": rep.frames_posed,
              "frames_used": rep.frames_used, "keyframes": rep.keyframes, "dropped": rep.dropped,
              "timings_ms": rep.timings_ms, "voxels": rep.snapshot.size, "wall_s": rep.wall_s,
              "frames_per_s": fps, "tf_messages_copied": len(rep.tf_messages),
              "metrics": extra or None}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".report.json.partial"
    tmp.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    tmp.replace(out / "report.json")
    written.append(out / "report.json")
    for p in written:
        print(f"wrote {p}")
    print(f"outputs written in {time.perf_counter() - t_out:.1f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
