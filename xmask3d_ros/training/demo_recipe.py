"""The demo checkpoint's whole recipe, one function (``xmask3d-train-demo``).

Steps, each skipped when its output already exists and matches its config (a stamp file), so an
interrupted run continues where it stopped:

1. **rooms**: seeded synthetic rooms in the ScanNet layout, training and held-out seeds disjoint.
2. **clip**: region-text pretraining of the tiny CLIP on the training rooms' views with every
   class name, novel ones included (:mod:`~xmask3d_ros.training.clip_pretrain`): the stand-in
   for web-scale CLIP pretraining, which saw every class too.
3. **train**: XMask3D with the frozen CLIP on the training rooms, **base labels only**; at the
   same time, in a second process, the same run without mask-level regularisation (ablation).
3b. **tune**: the ensemble's base/novel ratios, chosen by hIoU on tuning rooms of their own (the
   reference's 0.65/0.35 suit real CLIP; the tiny CLIP's base-class regions are weaker).
4. **eval**: the held-out rooms with every class name: the full model, without the ensemble,
   without the 2D branch (pure-3D features and logits), and the ablation model.
5. **package**: ``config.yaml`` + ``model.safetensors`` + ``clip.safetensors`` +
   ``vocabulary.yaml`` + ``metrics.json`` + ``MODEL_CARD.md`` in ``checkpoint_dir``.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.config.schema import from_dict, load_config, to_dict
from xmask3d_ros.config.synthetic import SyntheticCfg
from xmask3d_ros.config.training import (
    DemoDataCfg,
    DemoRecipeCfg,
    DemoTuneCfg,
    EvalCfg,
    TrainCfg,
)
from xmask3d_ros.data.labels import label_set
from xmask3d_ros.data.partitions import get_partition
from xmask3d_ros.metrics.confusion import IoUResult
from xmask3d_ros.training.clip_pretrain import (
    load_region_bank,
    pretrain_clip,
    region_accuracy,
    save_clip_weights,
)

__all__ = ["ABLATIONS", "RecipeResult", "run_recipe"]

CLIP_FILE = "clip.safetensors"
TUNE_SPLIT = "tune"
ABLATIONS = (  # (row key, what differs from the full model)
    ("full", "XMask3D (fused features, MaskCLIP ensemble, base/novel gating)"),
    ("no_ensemble", "without the MaskCLIP ensemble (fused features only)"),
    ("no_2d_branch", "without the 2D mask branch (pure-3D features)"),
    ("no_mask_reg", "without mask-level regularisation (loss_3d_contra = 0, separate run)"),
)


@dataclasses.dataclass
class RecipeResult:
    checkpoint: Path
    rows: dict[str, IoUResult]
    clip_accuracy: dict[str, float]
    seconds: dict[str, float]


def _log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _stamp_ok(path: Path, stamp: dict[str, Any]) -> bool:
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")) == stamp)
    except (OSError, ValueError):
        return False


def _write_stamp(path: Path, stamp: dict[str, Any]) -> None:
    path.write_text(json.dumps(stamp, indent=1, sort_keys=True), encoding="utf-8")


# ---- 1. rooms -----------------------------------------------------------------------------


def _room_cfg(d: DemoDataCfg, split: str) -> SyntheticCfg:
    return from_dict(SyntheticCfg, {
        "camera": {"width": d.width, "height": d.height},
        "ground_truth": {"point_spacing_m": d.point_spacing_m},
        "scannet": {"split": split},
    })


def _write_rooms(root: str, d: DemoDataCfg, jobs: Sequence[tuple[str, int]]) -> None:
    from xmask3d_ros.data.synthetic import generate_room
    from xmask3d_ros.data.synthetic.export import export_scannet_scene

    torch.set_num_threads(1)
    for split, seed in jobs:
        room = generate_room(seed, _room_cfg(d, split))
        export_scannet_scene(root, f"scene{seed:04d}_00", room, d.frames_per_room)


def make_rooms(d: DemoDataCfg, workers: int) -> bool:
    """Generate the rooms of ``d`` under ``d.root`` (a stamp skips it next time); returns
    whether anything was generated."""
    root = Path(d.root)
    stamp = {"data": to_dict(d), "format": 1}
    if _stamp_ok(root / "demo_rooms.json", stamp):
        _log(f"rooms: {root} is up to date")
        return False
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    jobs = [("train", d.train_seed + i) for i in range(d.train_rooms)]
    jobs += [("val", d.val_seed + i) for i in range(d.val_rooms)]
    shards = [jobs[i::workers] for i in range(workers)]
    _log(f"rooms: {d.train_rooms} training + {d.val_rooms} held-out rooms, "
         f"{d.frames_per_room} views each, {d.width}x{d.height}, {workers} processes")
    _run_parallel([(_write_rooms, (str(root), d, shard)) for shard in shards])
    _write_stamp(root / "demo_rooms.json", stamp)
    return True


def make_tune_rooms(d: DemoDataCfg, t: DemoTuneCfg, workers: int) -> bool:
    """Rooms of split ``tune`` under ``d.root`` (their own stamp: changing them does not
    invalidate the training rooms); returns whether anything was generated."""
    root = Path(d.root)
    stamp = {"data": to_dict(d), "tune_seed": t.seed, "tune_rooms": t.rooms, "format": 1}
    tune_seeds = set(range(t.seed, t.seed + t.rooms))
    others = set(range(d.train_seed, d.train_seed + d.train_rooms)) | set(
        range(d.val_seed, d.val_seed + d.val_rooms))
    if tune_seeds & others:
        raise ValueError(f"tune.seed: tuning rooms {sorted(tune_seeds)[:3]}... overlap the "
                         "training or held-out rooms")
    if _stamp_ok(root / "demo_tune_rooms.json", stamp):
        return False
    shutil.rmtree(root / "scannet_3d" / TUNE_SPLIT, ignore_errors=True)
    jobs = [(TUNE_SPLIT, t.seed + i) for i in range(t.rooms)]
    _log(f"tune rooms: {t.rooms} rooms (seeds {t.seed}-{t.seed + t.rooms - 1})")
    _run_parallel([(_write_rooms, (str(root), d, jobs[i::workers])) for i in range(workers)])
    _write_stamp(root / "demo_tune_rooms.json", stamp)
    return True


def _run_parallel(calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]]) -> None:
    """Run ``calls`` in spawned processes but the last, which runs here; re-raise failures."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=fn, args=args) for fn, args in calls[:-1]]
    for p in procs:
        p.start()
    try:
        fn, args = calls[-1]
        fn(*args)
    finally:
        for p in procs:
            p.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"a recipe worker process failed (exit codes {failed})")


# ---- 2. CLIP ------------------------------------------------------------------------------


def _model_cfg(cfg: DemoRecipeCfg, extra: Sequence[str] = ()) -> ModelConfig:
    from xmask3d_ros.config.paths import resolve_model_config

    return load_config(ModelConfig, resolve_model_config(cfg.train.model_config),
                       [*cfg.train.model_overrides, *extra])


def pretrain_demo_clip(cfg: DemoRecipeCfg, out: Path) -> tuple[dict[str, float], bool]:
    """Pretrain (or reuse) ``out/clip.safetensors``; returns held-out region accuracy and
    whether it trained."""
    from xmask3d_ros.model.clip import build_clip

    part = get_partition(cfg.train.data.partition)
    names = list(part.classes)
    labels = label_set(cfg.train.data.label_set)
    clip_cfg = dataclasses.replace(_model_cfg(cfg).clip, weights_path="")
    path = out / CLIP_FILE
    stamp = {"clip": to_dict(cfg.clip), "arch": to_dict(clip_cfg), "data": to_dict(cfg.data),
             "names": names}
    report = out / "clip_report.json"
    if path.is_file() and _stamp_ok(out / "clip_stamp.json", stamp) and report.is_file():
        _log(f"clip: {path} is up to date")
        return dict(json.loads(report.read_text(encoding="utf-8"))), False
    torch.set_num_threads(1)
    bank = load_region_bank(cfg.data.root, "train", labels, names)
    held_out = load_region_bank(cfg.data.root, "val", labels, names)
    _log(f"clip: region-text pretraining on {len(bank)} views, {len(names)} class names "
         f"(base and novel), {cfg.clip.steps} steps")
    clip = build_clip(clip_cfg, allow_random_init=True)
    pretrain_clip(clip, bank, cfg.clip, log=_log)
    acc = region_accuracy(clip, held_out, min_pixels=cfg.clip.min_region_pixels)
    result = _accuracy_summary(acc, names, part.base, part.novel)
    _log(f"clip: held-out region accuracy base {result['base']:.2f} "
         f"novel {result['novel']:.2f}")
    save_clip_weights(clip, path)
    report.write_text(json.dumps(result, indent=1), encoding="utf-8")
    _write_stamp(out / "clip_stamp.json", stamp)
    return result, True


def _accuracy_summary(acc: np.ndarray, names: Sequence[str], base: Sequence[str],
                      novel: Sequence[str]) -> dict[str, float]:
    per = {n: float(a) for n, a in zip(names, acc)}

    def mean(group: Sequence[str]) -> float:
        vals = [per[n] for n in group if n in per and np.isfinite(per[n])]
        return float(np.mean(vals)) if vals else float("nan")

    return {"base": mean(base), "novel": mean(novel), **{f"class/{n}": v for n, v in per.items()}}


# ---- 3. training --------------------------------------------------------------------------


def _train_cfg(cfg: DemoRecipeCfg, out: Path, name: str, extra: Sequence[str]) -> TrainCfg:
    overrides = (*cfg.train.model_overrides, f"clip.weights_path={(out / CLIP_FILE).resolve()}",
                 *extra)
    return dataclasses.replace(
        cfg.train, out_dir=str(out / name), model_overrides=overrides,
        data=dataclasses.replace(cfg.train.data, root=cfg.data.root),
    )


def _train(tcfg: TrainCfg) -> None:
    from xmask3d_ros.training.trainer import Trainer, latest_checkpoint

    torch.set_num_threads(max(1, tcfg.torch_threads))
    trainer = Trainer(tcfg)
    done = latest_checkpoint(tcfg.out_dir)
    trainer.fit(resume=done)


def _finished(tcfg: TrainCfg) -> Path | None:
    """The final checkpoint of a run that reached ``tcfg.epochs``, else None."""
    from xmask3d_ros.training.trainer import STATE_FILE, latest_checkpoint

    folder = latest_checkpoint(tcfg.out_dir)
    if folder is None:
        return None
    state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    return folder if int(state["epoch"]) == tcfg.epochs else None


def train_models(cfg: DemoRecipeCfg, out: Path) -> tuple[Path, Path, bool]:
    """Train the full model and the ablation (in parallel with ``workers >= 2``); returns
    their final checkpoint folders and whether anything trained (finished runs are kept; an
    interrupted one resumes from its newest checkpoint)."""
    main = _train_cfg(cfg, out, "train_full", ())
    ablation = _train_cfg(cfg, out, "train_no_mask_reg", cfg.ablation_overrides)
    done = (_finished(main), _finished(ablation))
    if done[0] is not None and done[1] is not None:
        _log(f"train: {done[0]} and {done[1]} are finished")
        return done[0], done[1], False
    _log(f"train: {cfg.train.epochs} epochs of XMask3D on base labels "
         f"({cfg.train.data.partition}); ablation {list(cfg.ablation_overrides)} "
         f"{'alongside' if cfg.workers >= 2 else 'afterwards'}")
    if cfg.workers >= 2:
        _run_parallel([(_train, (ablation,)), (_train, (main,))])
    else:
        _train(main)
        _train(ablation)
    from xmask3d_ros.training.trainer import latest_checkpoint

    folders = (latest_checkpoint(main.out_dir), latest_checkpoint(ablation.out_dir))
    if folders[0] is None or folders[1] is None:
        raise RuntimeError(f"training left no checkpoint in {main.out_dir} / {ablation.out_dir}")
    return folders[0], folders[1], True


# ---- 3b. ensemble ratios ----------------------------------------------------------------


def tune_ensemble(cfg: DemoRecipeCfg, full: Path) -> tuple[list[str], list[dict[str, float]]]:
    """Grid over the ensemble ratios on the tuning rooms; returns the best (by hIoU) as
    model-config overrides, and every candidate's scores (for the model card)."""
    from xmask3d_ros.model.build import from_pretrained
    from xmask3d_ros.training.evaluator import evaluate
    from xmask3d_ros.training.views import ViewDataset

    torch.set_num_threads(1)
    data = dataclasses.replace(cfg.train.data, root=cfg.data.root)
    rooms = ViewDataset(data, TUNE_SPLIT, seed=cfg.train.seed)
    model = from_pretrained(full)
    grid: list[dict[str, float]] = []
    for base_ratio in cfg.tune.base_ratios:
        for novel_ratio in cfg.tune.novel_ratios:
            ens = dataclasses.replace(model.cfg.ensemble, base_ratio=base_ratio,
                                      novel_ratio=novel_ratio)
            model.cfg = dataclasses.replace(model.cfg, ensemble=ens)
            r = evaluate(model, rooms, cfg.train.eval).result
            grid.append({"base_ratio": base_ratio, "novel_ratio": novel_ratio, "hiou": r.hiou,
                         "miou_base": r.miou_base, "miou_novel": r.miou_novel})
            _log(f"tune base_ratio {base_ratio} novel_ratio {novel_ratio}: hIoU "
                 f"{100 * r.hiou:.1f} base {100 * r.miou_base:.1f} novel {100 * r.miou_novel:.1f}")
    best = max(grid, key=lambda g: g["hiou"])
    return ([f"ensemble.base_ratio={best['base_ratio']}",
             f"ensemble.novel_ratio={best['novel_ratio']}"], grid)


# ---- 4. evaluation ------------------------------------------------------------------------


def evaluate_variants(cfg: DemoRecipeCfg, full: Path, ablation: Path, out: Path,
                      overrides: Sequence[str] = ()) -> dict[str, IoUResult]:
    """The ablation table's rows on the held-out rooms (reports under ``out/eval/<row>``);
    ``overrides`` (the tuned ensemble ratios) apply to both models."""
    from xmask3d_ros.model.build import from_pretrained
    from xmask3d_ros.training.evaluator import evaluate, write_reports
    from xmask3d_ros.training.views import ViewDataset

    torch.set_num_threads(1)
    data = dataclasses.replace(cfg.train.data, root=cfg.data.root)
    val = ViewDataset(data, data.val_split, seed=cfg.train.seed)
    base_eval = cfg.train.eval
    plans: list[tuple[str, Path, EvalCfg]] = [
        ("full", full, base_eval),
        ("no_ensemble", full, dataclasses.replace(base_eval, ensemble=False)),
        ("no_2d_branch", full, dataclasses.replace(base_eval, ensemble=False,
                                                   features="pure_3d")),
        ("no_mask_reg", ablation, base_eval),
    ]
    rows: dict[str, IoUResult] = {}
    for key, folder, ecfg in plans:
        model = from_pretrained(folder, overrides)
        ev = evaluate(model, val, ecfg)
        write_reports(ev, out / "eval" / key, dict(ABLATIONS)[key])
        rows[key] = ev.result
        r = ev.result
        _log(f"eval {key}: hIoU {100 * r.hiou:.1f} base {100 * r.miou_base:.1f} "
             f"novel {100 * r.miou_novel:.1f} ({ev.scenes} rooms, {ev.views} views)")
    return rows


# ---- 5. package ---------------------------------------------------------------------------


def package_checkpoint(cfg: DemoRecipeCfg, full: Path, out: Path, rows: dict[str, IoUResult],
                       clip_acc: dict[str, float], seconds: dict[str, float],
                       tuned: tuple[list[str], list[dict[str, float]]]) -> Path:
    """Write the demo checkpoint folder (atomically: built beside it, then swapped in)."""
    from xmask3d_ros.model.build import from_pretrained, save_pretrained

    dest = Path(cfg.checkpoint_dir)
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    model = from_pretrained(full, tuned[0])  # the tuned ensemble ratios travel in config.yaml
    # the checkpoint ships its CLIP and names it relative to its folder
    model.cfg = dataclasses.replace(
        model.cfg, clip=dataclasses.replace(model.cfg.clip, weights_path=CLIP_FILE))
    save_pretrained(model, tmp, dtype=torch.float16)
    part = get_partition(cfg.train.data.partition)
    # the CLIP pretrained on these names: its token table keeps only their tokens
    save_clip_weights(model.clip, tmp / CLIP_FILE, vocabulary=part.classes)
    (tmp / "vocabulary.yaml").write_text(yaml.safe_dump(
        {"partition": part.name, "base": list(part.base), "novel": list(part.novel)},
        sort_keys=False), encoding="utf-8")
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False),
                                     encoding="utf-8")
    metrics = {key: _row_json(r) for key, r in rows.items()}
    (tmp / "metrics.json").write_text(json.dumps(
        {"rows": metrics, "clip_region_accuracy": clip_acc, "seconds": seconds,
         "ensemble_tuning": tuned[1]}, indent=1), encoding="utf-8")
    (tmp / "MODEL_CARD.md").write_text(model_card(cfg, rows, clip_acc, seconds, tuned[1]),
                                       encoding="utf-8")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


def _row_json(r: IoUResult) -> dict[str, Any]:
    return {"hiou": r.hiou, "miou_base": r.miou_base, "miou_novel": r.miou_novel,
            "miou_all": r.miou_all,
            "iou": {r.names[i]: float(r.iou[i]) for i in r.evaluated}}


def ablation_table(rows: dict[str, IoUResult]) -> str:
    lines = ["| model | hIoU | mIoU base | mIoU novel | mIoU all |", "|---|---|---|---|---|"]
    for key, label in ABLATIONS:
        if key in rows:
            r = rows[key]
            lines.append(f"| {label} | {100 * r.hiou:.1f} | {100 * r.miou_base:.1f} | "
                         f"{100 * r.miou_novel:.1f} | {100 * r.miou_all:.1f} |")
    return "\n".join(lines)


def per_class_table(r: IoUResult, novel: Sequence[str]) -> str:
    names = [r.names[i] for i in r.evaluated]
    head = "| " + " | ".join(f"{n}{'*' if n in novel else ''}" for n in names) + " |"
    sep = "|" + "---|" * len(names)
    vals = "| " + " | ".join(f"{100 * float(r.iou[i]):.0f}" for i in r.evaluated) + " |"
    return "\n".join([head, sep, vals])


def tuning_table(grid: Sequence[dict[str, float]]) -> str:
    lines = ["| ensemble base_ratio | novel_ratio | hIoU | mIoU base | mIoU novel |",
             "|---|---|---|---|---|"]
    best = max(grid, key=lambda g: g["hiou"]) if grid else None
    for g in grid:
        mark = " (chosen)" if g is best else ""
        lines.append(f"| {g['base_ratio']}{mark} | {g['novel_ratio']} | {100 * g['hiou']:.1f} | "
                     f"{100 * g['miou_base']:.1f} | {100 * g['miou_novel']:.1f} |")
    return "\n".join(lines)


def model_card(cfg: DemoRecipeCfg, rows: dict[str, IoUResult], clip_acc: dict[str, float],
               seconds: dict[str, float], grid: Sequence[dict[str, float]] = ()) -> str:
    part = get_partition(cfg.train.data.partition)
    d = cfg.data
    total = sum(seconds.values())
    steps = ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items())
    conv_note = (": a class absent from the held-out ground truth is skipped, not scored 0"
                 if cfg.train.eval.convention == "scannet" else ": absent classes score 0")
    return f"""# xmask3d_ros demo checkpoint

A tiny XMask3D (config `{cfg.train.model_config}` with {list(cfg.train.model_overrides)}) trained
by this project on its own synthetic rooms, so the node, the replay tool and the tests have a
model that really segments and really answers novel class names, with no downloaded weights.
It is **not** a ScanNet model: it knows synthetic rooms at {d.width}x{d.height} pixels and
0.05 m voxels, nothing else.

## What it was trained on
- **CLIP** (`clip.safetensors`, tiny open_clip ViT, frozen afterwards): region-text contrastive
  pretraining on the views of the training rooms, every class region against the names of all
  {len(part.classes)} classes, base and novel ({cfg.clip.steps} steps, seed {cfg.clip.seed}).
  This stands in for web-scale CLIP pretraining, which also saw every class. Held-out region
  accuracy (MaskCLIP on ground-truth regions): base {100 * clip_acc['base']:.0f} %,
  novel {100 * clip_acc['novel']:.0f} %.
- **Diffusion UNet/VAE**: random init (seeded, frozen, not pretrained): the tiny 2D branch learns
  its mask decoder on top of random frozen features.
- **XMask3D** (`model.safetensors`, float16): {d.train_rooms} rooms (seeds {d.train_seed}-
  {d.train_seed + d.train_rooms - 1}, {d.frames_per_room} views each), **base labels only**:
  partition `{part.name}`, base = {', '.join(part.base)}; novel = {', '.join(part.novel)}
  (their points are ignored by every loss; the binary head sees them only as "not base", as in
  the paper). {cfg.train.epochs} epochs, batch {cfg.train.batch_size}, AdamW lr 3D
  {cfg.train.lr_3d} / others {cfg.train.lr_others}, cosine schedule, seed {cfg.train.seed}.

## Held-out rooms, all {len(part.evaluated_indices)} evaluated class names ({d.val_rooms} rooms, seeds
{d.val_seed}-{d.val_seed + d.val_rooms - 1}; {cfg.train.eval.mode}-level evaluation, the
`{cfg.train.eval.convention}` convention{conv_note})

{ablation_table(rows)}

Rows 1-3 are the same checkpoint evaluated three ways; row 4 is a second run trained beside it
with the same seed and data (same ensemble ratios). Per-class IoU of the full model (* = novel;
nan = the class is absent from the held-out rooms' ground truth):

{per_class_table(rows['full'], part.novel) if 'full' in rows else ''}

## Ensemble ratios

The geometric ensemble's ratios (reference 0.65 for base classes, 0.35 for novel ones) were
chosen by hIoU on {cfg.tune.rooms} tuning rooms of their own (seeds {cfg.tune.seed}-
{cfg.tune.seed + cfg.tune.rooms - 1}), never on the held-out rooms above; the chosen values are
in `config.yaml` (`ensemble`):

{tuning_table(grid)}

## Reproduce

    xmask3d-train-demo            # = config/train/demo.yaml; about {total / 60:.0f} min here

Measured on {platform.machine()} with {torch.get_num_threads()} torch thread(s) per process,
{cfg.workers} processes: {steps}. Every step is seeded. A rerun skips the finished steps
(rooms, CLIP, training) and repeats the tuning and evaluation.
"""


# ---- all ------------------------------------------------------------------------------------


def run_recipe(cfg: DemoRecipeCfg) -> RecipeResult:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False),
                                     encoding="utf-8")
    # seconds of each step when it last ran (a rerun that skips a step keeps its time)
    timings_file = out / "timings.json"
    try:
        seconds: dict[str, float] = json.loads(timings_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        seconds = {}

    def record(step: str, start: float, did_work: bool) -> None:
        if did_work or step not in seconds:
            seconds[step] = time.perf_counter() - start
        timings_file.write_text(json.dumps(seconds, indent=1), encoding="utf-8")

    t = time.perf_counter()
    record("rooms", t, make_rooms(cfg.data, cfg.workers))
    t = time.perf_counter()
    clip_acc, trained = pretrain_demo_clip(cfg, out)
    record("clip", t, trained)
    t = time.perf_counter()
    full, ablation, trained = train_models(cfg, out)
    record("train", t, trained)
    t = time.perf_counter()
    make_tune_rooms(cfg.data, cfg.tune, cfg.workers)
    tuned = tune_ensemble(cfg, full)
    record("tune", t, True)  # the grid always runs (a minute); room generation is skipped
    t = time.perf_counter()
    rows = evaluate_variants(cfg, full, ablation, out, tuned[0])
    record("eval", t, True)
    dest = package_checkpoint(cfg, full, out, rows, clip_acc, seconds, tuned)
    _log(f"checkpoint written to {dest}\n{ablation_table(rows)}")
    return RecipeResult(dest, rows, clip_acc, seconds)

