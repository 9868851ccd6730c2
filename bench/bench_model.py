"""XMask3D time per keyframe by stage (3D, 2D, CLIP, fusion), tiny config on CPU by default.

Keyframes are rendered from a seeded synthetic room; the model gets every depth point of the
frame in the map frame (what the pipeline's visible voxels would be at ~1 point per pixel) and
runs :meth:`XMask3D.infer_frame` (visibility test, 3D branch, 2D branch, clean-up, fusion,
MaskCLIP, ensemble + gating with the 27-class synthetic vocabulary). Stages:

* 3d: voxelisation, MinkUNet (semantic) + MinkUNet (binary head), decoder, adapter, pooling;
* 2d: captioner, frozen SD UNet + VAE feature pass, projections, pixel decoder, mask decoder;
* clip: class-name text embeddings (cached after the first call) and MaskCLIP of the final masks;
* fusion: mask resize and sampling at the points, panoptic clean-up, fusion, ensemble, gating.

"total" is the wall time of the whole call (visibility test included); figures are medians of
``--repeat`` calls after one warm-up. Also timed: one training step (2 views, forward + losses +
backward). Writes bench/results/model.md (or ``--out``) and prints it.

    python bench/bench_model.py [--quick] [--threads N] [--config tiny|paper] [--device cpu|cuda]

``--config paper`` builds the paper architecture with random weights (nothing is read) for
timing only; on a CUDA device ``--fp16`` runs the dense 2D parts and CLIP in float16.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xmask3d_ros.config import load_config  # noqa: E402
from xmask3d_ros.config.model import ModelConfig  # noqa: E402
from xmask3d_ros.config.paths import resolve_model_config  # noqa: E402
from xmask3d_ros.data.classes import IGNORE_INDEX, SYNTHETIC_CLASSES, raw_to_synthetic  # noqa: E402
from xmask3d_ros.data.synthetic import default_intrinsics, generate_room, render_frame  # noqa: E402
from xmask3d_ros.geometry.camera import PinholeCamera  # noqa: E402
from xmask3d_ros.geometry.frame import PosedFrame, RgbdFrame  # noqa: E402
from xmask3d_ros.geometry.transforms import SE3  # noqa: E402
from xmask3d_ros.model.build import build_model  # noqa: E402
from xmask3d_ros.model.projection import visible_point_pixels  # noqa: E402
from xmask3d_ros.model.xmask3d import (  # noqa: E402
    STAGES,
    TrainBatch,
    Vocabulary,
    XMask3D,
    semantic_set_target,
)

NO_WEIGHTS = (
    "allow_random_init=true", "weights_path=", "clip.weights_path=",
    "diffusion.unet_path=", "diffusion.vae_path=",
)  # fmt: skip
BASE = SYNTHETIC_CLASSES[:15]


def keyframe(
    width: int, height: int, t_s: float, seed: int = 3
) -> tuple[PosedFrame, np.ndarray, Any]:
    room = generate_room(seed)
    K = default_intrinsics(width, height)
    T = room.trajectory.poses([t_s])[0]
    f = render_frame(room, T, K, width, height)
    cam = PinholeCamera(K[0, 0], K[1, 1], K[0, 2], K[1, 2], width, height)
    pose = SE3.from_matrix(T)
    pts, _ = cam.backproject(f.depth_m)
    posed = PosedFrame(RgbdFrame(f.rgb, f.depth_m, cam, int(t_s * 1e9), "cam_optical"), pose)
    return posed, pose.apply(pts).astype(np.float32), f.label


def time_inference(model: XMask3D, posed: PosedFrame, points: np.ndarray,
                   vocab: Vocabulary | None, repeat: int) -> tuple[dict[str, float], int, int]:
    model.infer_frame(posed, points, vocabulary=vocab)  # warm-up (text cache, allocator)
    runs: list[dict[str, float]] = []
    n = k = 0
    for _ in range(repeat):
        t: dict[str, float] = {}
        t0 = time.perf_counter()
        out = model.infer_frame(posed, points, vocabulary=vocab, timings=t)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        t["total"] = time.perf_counter() - t0
        runs.append(t)
        assert out is not None
        n, k = int(out.point_index.shape[0]), int(out.mask_queries.shape[0])
    return {s: statistics.median(r.get(s, 0.0) for r in runs) for s in (*STAGES, "total")}, n, k


def train_batch(model: XMask3D, frames: list[tuple[PosedFrame, np.ndarray, Any]]) -> TrainBatch:
    lut = np.array([BASE.index(c) if c in BASE else IGNORE_INDEX for c in SYNTHETIC_CLASSES]
                   + [IGNORE_INDEX] * 229)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in "pcvrqlb"}
    images, targets = [], []
    for i, (posed, pts, label) in enumerate(frames):
        f = posed.frame
        px = visible_point_pixels(pts, f.camera, f.depth_m, T_world_cam=posed.T_map_cam)
        syn = raw_to_synthetic(label).astype(np.int64)
        sp = syn[px.rows, px.cols]
        binary = np.where(sp == IGNORE_INDEX, IGNORE_INDEX, (lut[sp] != IGNORE_INDEX).astype(int))
        for key, v in zip("pcvrqlb", (pts[px.point_index], f.rgb[px.rows, px.cols],
                                      np.full(len(px), i), px.rows, px.cols, lut[sp], binary)):
            cols[key].append(v)
        images.append(torch.from_numpy(f.rgb).permute(2, 0, 1).float() / 255.0)
        targets.append(semantic_set_target(torch.from_numpy(lut[syn]), len(BASE)))
    c = {k: torch.from_numpy(np.concatenate(v)) for k, v in cols.items()}
    return TrainBatch(torch.stack(images), c["p"], c["c"], c["v"].long(), c["r"].long(),
                      c["q"].long(), c["l"].long(), c["b"].long(), targets,
                      torch.randn(len(frames), model.embed_dim))


def time_training(model: XMask3D, batch: TrainBatch, repeat: int) -> float:
    text = model.text_embeddings(BASE)
    model.train()
    times = []
    for i in range(repeat + 1):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        out = model(batch, text, epoch=10**6)  # every loss on, MaskCLIP included
        loss = torch.stack(list(model.losses(out, epoch=10**6).values())).sum()
        loss.backward()
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    model.eval()
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--config", default="tiny", help="model config name or YAML path")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--fp16", action="store_true", help="runtime.dtype=float16 (CUDA only)")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parent / "results" / "model.md")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rep = 3 if args.quick else 11
    overrides = list(NO_WEIGHTS) + (["runtime.dtype=float16"] if args.fp16 else [])
    cfg = load_config(ModelConfig, resolve_model_config(args.config), overrides)
    model = build_model(cfg).to(args.device).eval()
    vocab = Vocabulary.from_names(SYNTHETIC_CLASSES, BASE)
    load_before = os.getloadavg()[0]
    cases = [(128, 128, vocab), (128, 128, None), (320, 240, vocab), (320, 240, None)]
    cases += [] if args.quick else [(640, 480, vocab)]
    rows = []
    for w, h, v in cases:
        posed, pts, _ = keyframe(w, h, 1.0)
        t, n, k = time_inference(model, posed, pts, v, rep)
        what = "27 classes, labels" if v is not None else "no vocabulary (segmenter)"
        rows.append((f"{w}x{h}, {what}", n, k, t))
    frames = [keyframe(128, 128, s) for s in (1.0, 4.0)]
    train_s = time_training(model, train_batch(model, frames), 2 if args.quick else 5)

    head = "| keyframe | visible points | final masks | " + " | ".join(
        f"{s} ms" for s in (*STAGES, "total")) + " |\n|---|---:|---:|" + "---:|" * (len(STAGES) + 1)
    cols = (*STAGES, "total")
    lines = [f"| {label} | {n:,} | {k} | " + " | ".join(f"{t[s] * 1e3:.1f}" for s in cols) + " |"
             for label, n, k, t in rows]
    dev = (torch.cuda.get_device_name() if args.device == "cuda" else
           f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads")
    meta = (f"Config `{cfg.name}` (random init), device: {dev}, dtype {cfg.runtime.dtype}; torch "
            f"{torch.__version__}, Python {platform.python_version()}; {datetime.date.today()}; "
            f"median of {rep} calls after a warm-up; 1-min load average {load_before:.1f} before, "
            f"{os.getloadavg()[0]:.1f} after.")
    text = (
        f"# XMask3D per keyframe by stage ({cfg.name})\n\n{meta}\n\n{head}\n" + "\n".join(lines)
        + f"\n\nTraining step, 2 views of 128x128 (forward + every loss incl. MaskCLIP + "
        f"backward): {train_s * 1e3:.0f} ms.\n\n"
        "Stages: 3d = voxelise + both MinkUNets (pure PyTorch sparse conv) + heads; 2d = "
        "captioner + frozen SD feature pass + pixel decoder + mask decoder; clip = text "
        "embeddings (cached) + MaskCLIP of the final masks; fusion = mask sampling, panoptic "
        "clean-up, fusion, ensemble and gating (the last two only with a vocabulary). total also "
        "includes the visibility test and colour lookup. Every depth pixel of the frame is a "
        "candidate point (the pipeline passes its visible map voxels instead: fewer).\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
