"""Configuration of training and evaluation (``xmask3d-train``, ``xmask3d-eval``).

Defaults are the reference's (reference-notes §1.15): AdamW (betas 0.9/0.999, weight decay
0.01), lr 1e-3 for both MinkUNets and 1e-4 for the rest, per-iteration cosine decay to 0 with
no warm-up, no gradient clipping, seed 5557, 150 epochs. AMP is an option (the reference has
none) and only takes effect on CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass

from xmask3d_ros.config.schema import ConfigError, param, section

__all__ = ["DataCfg", "EvalCfg", "TrainCfg"]


@dataclass(frozen=True)
class DataCfg:
    """Where the scenes are and how views are chosen (reference-notes §1.2)."""

    root: str = param("", "dataset root holding scannet_3d/ and scannet_2d/ (ScanNet layout)")
    train_split: str = param("train", "split folder of scannet_3d/ used for training")
    val_split: str = param("val", "split folder of scannet_3d/ used for evaluation")
    label_set: str = param(
        "scannet20", "class list of the labels",
        choices=("scannet20", "scannet200", "synthetic"),
    )
    label_source: str = param(
        "points",
        "per-point labels: 'points' = the 3D file's labels (ScanNet-20 indices; ScanNet200: "
        "scannet_3d_200/<split>/<scene>.txt raw ids), 'image' = the view's label/ image at the "
        "point's pixel (raw ids; the synthetic vocabulary needs this)",
        choices=("points", "image"),
    )
    partition: str = param("scannet_B15N4", "base/novel partition (data/partitions.py)")
    min_visible: int = param(400, "a view needs more visible points than this", ge=0)
    max_visible: int = param(65000, "... and fewer than this", ge=1)
    min_labelled: int = param(10, "... and more labelled (evaluated-class) points than this", ge=0)
    max_tries: int = param(50, "random frames tried per training sample before giving up", ge=1)
    loop: int = param(1, "repeats of the scene list per epoch (reference: 16)", ge=1)
    max_scenes: int = param(0, "use only the first N scenes of a split (0 = all)", ge=0)
    eval_frame_stride: int = param(1, "evaluation uses every N-th accepted frame", ge=1)
    border_px: int = param(10, "visibility test: pixels kept clear of the border", ge=0)
    depth_tolerance_rel: float = param(0.25, "visibility test: relative depth tolerance", gt=0)
    augment: bool = param(
        False, "training draws: random rotation (full turn about z) and scale of the 3D input "
        "(the reference voxelizer's jitter)"
    )

    def __post_init__(self) -> None:
        if self.max_visible <= self.min_visible:
            raise ConfigError(f"max_visible: {self.max_visible} must exceed min_visible "
                              f"{self.min_visible}")


@dataclass(frozen=True)
class EvalCfg:
    """Evaluation protocol (reference-notes §1.13, §2.5)."""

    convention: str = param(
        "xmask3d", "absent classes: 'xmask3d' = IoU 0 and counted, 'scannet' = skipped",
        choices=("xmask3d", "scannet"),
    )
    mode: str = param(
        "scene",
        "'scene' = votes of every accepted view, unseen points take their nearest seen "
        "point's label, metrics on all points (run/infer.py); 'view' = each view's visible "
        "points on their own (the training-time validation)",
        choices=("scene", "view"),
    )
    ensemble: bool = param(True, "use the MaskCLIP geometric ensemble and base/novel gating")
    features: str = param(
        "fused",
        "point features classified: 'fused' (2D mask + 3D, the model), 'pure_3d' (the 3D "
        "branch alone: the 'without 2D branch' ablation) or 'map' (per view what a map query "
        "computes: class-agnostic masks, then the ensemble and gating)",
        choices=("fused", "pure_3d", "map"),
    )


@dataclass(frozen=True)
class ClipPretrainCfg:
    """Region-text pretraining of a tiny CLIP (the demo's stand-in for web-scale CLIP)."""

    steps: int = param(1500, "optimiser steps", ge=1)
    batch_views: int = param(16, "frames per step (every class region of each is a sample)", ge=1)
    lr: float = param(2e-3, "AdamW peak learning rate", gt=0)
    weight_decay: float = param(0.05, "AdamW weight decay", ge=0)
    warmup_steps: int = param(100, "linear warm-up steps", ge=0)
    min_region_pixels: int = param(24, "a class region needs this many pixels", ge=1)
    seed: int = param(11, "seed of the frame draws and flips", ge=0)
    log_every: int = param(100, "log a line every N steps", ge=1)


@dataclass(frozen=True)
class TrainCfg:
    """Everything ``xmask3d-train`` needs besides the model config."""

    model_config: str = param("tiny", "model config: shipped name (tiny, paper) or YAML path")
    model_overrides: tuple[str, ...] = param((), "key=value overrides of the model config")
    out_dir: str = param("runs/train", "run folder: checkpoints, metrics.csv, eval reports")
    epochs: int = param(150, "training epochs", ge=1)
    batch_size: int = param(16, "views per iteration", ge=1)
    max_iters_per_epoch: int = param(0, "cap on iterations per epoch (0 = the whole set)", ge=0)
    lr_3d: float = param(1e-3, "AdamW lr of both MinkUNets (3D and binary)", gt=0)
    lr_others: float = param(1e-4, "AdamW lr of every other trainable part", gt=0)
    weight_decay: float = param(0.01, "AdamW weight decay (all parameters, as reference)", ge=0)
    betas: tuple[float, float] = param((0.9, 0.999), "AdamW betas", ge=0, lt=1)
    grad_clip_norm: float = param(0.0, "max global gradient norm (0 = off, as reference)", ge=0)
    amp: bool = param(True, "float16 autocast + gradient scaling on CUDA (ignored on CPU)")
    seed: int = param(5557, "seed of model init, sampling and losses", ge=0)
    device: str = param("auto", "torch device ('auto' = cuda if available)")
    torch_threads: int = param(
        1,
        "intra-op CPU threads set by the CLIs (0 = torch's default); 1 makes CPU runs "
        "bit-reproducible and, on a shared 2-core machine, was 10-70x faster than 2",
        ge=0,
    )
    checkpoint_every_epochs: int = param(1, "write a checkpoint every N epochs", ge=1)
    keep_checkpoints: int = param(2, "keep the newest N checkpoints (0 = all)", ge=0)
    eval_every_epochs: int = param(0, "evaluate on val_split every N epochs (0 = never)", ge=0)
    progress: bool = param(True, "print a progress line per iteration")
    data: DataCfg = section(DataCfg, "dataset and view selection")
    eval: EvalCfg = section(EvalCfg, "evaluation protocol")


@dataclass(frozen=True)
class DemoDataCfg:
    """The synthetic rooms of the demo recipe (ScanNet layout, seeds disjoint per split)."""

    root: str = param("data/demo", "dataset folder (generated when missing)")
    train_seed: int = param(1000, "seed of the first training room", ge=0)
    train_rooms: int = param(240, "training rooms", ge=1)
    val_seed: int = param(5000, "seed of the first held-out room", ge=0)
    val_rooms: int = param(16, "held-out rooms (evaluation)", ge=1)
    frames_per_room: int = param(12, "rendered views per room", ge=1)
    width: int = param(96, "image width in pixels", gt=0)
    height: int = param(72, "image height in pixels", gt=0)
    point_spacing_m: float = param(0.05, "spacing of the labelled surface points", gt=0)

    def __post_init__(self) -> None:
        train = range(self.train_seed, self.train_seed + self.train_rooms)
        val = range(self.val_seed, self.val_seed + self.val_rooms)
        if set(train) & set(val):
            raise ConfigError(f"val_seed: held-out rooms {val} overlap the training rooms {train}")


@dataclass(frozen=True)
class DemoTuneCfg:
    """Choosing the ensemble ratios on rooms of their own (never the held-out test rooms)."""

    seed: int = param(6000, "seed of the first tuning room", ge=0)
    rooms: int = param(16, "tuning rooms (split 'tune' under data.root)", ge=1)
    base_ratios: tuple[float, ...] = param(
        (0.65, 0.75, 0.85, 0.95), "ensemble.base_ratio candidates (reference 0.65)", ge=0, le=1)
    novel_ratios: tuple[float, ...] = param(
        (0.35,), "ensemble.novel_ratio candidates (reference 0.35)", ge=0, le=1)


@dataclass(frozen=True)
class DemoRecipeCfg:
    """``xmask3d-train-demo``: rooms -> tiny CLIP pretraining -> XMask3D on base labels ->
    ensemble ratios tuned on separate rooms -> held-out evaluation with ablations -> the
    committed demo checkpoint."""

    out_dir: str = param("runs/demo", "run folder (data stamp, CLIP, both trainings, reports)")
    checkpoint_dir: str = param("models/demo", "where the finished checkpoint is written")
    workers: int = param(2, "processes: room generation, and the ablation trains beside the "
                         "main model when >= 2", ge=1)
    data: DemoDataCfg = section(DemoDataCfg, "synthetic rooms")
    clip: ClipPretrainCfg = section(ClipPretrainCfg, "tiny CLIP region-text pretraining")
    train: TrainCfg = section(TrainCfg, "XMask3D training (data.root is set to data.root)")
    tune: DemoTuneCfg = section(DemoTuneCfg, "ensemble ratios chosen by hIoU on tuning rooms")
    ablation_overrides: tuple[str, ...] = param(
        ("loss.mask_contra=0",), "model overrides of the 'without mask-level regularisation' run"
    )
