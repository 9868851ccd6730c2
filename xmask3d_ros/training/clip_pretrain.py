"""Region-text pretraining of the demo's tiny CLIP on synthetic views.

Real CLIP learned, from web-scale image-caption pairs, to put an image region near the text of
its name for every class XMask3D will ever be asked about, base or novel. No such weights exist
for the tiny architecture, so the demo recipe stands in for that pretraining in miniature: each
labelled region of a rendered view (one binary mask per class present) is embedded by the
MaskCLIP forward (:meth:`~xmask3d_ros.model.clip.ClipModel.mask_embeddings_with_grad`, the very
path XMask3D uses at inference) and pulled towards the text embedding of its class name against
every other name, through both towers. Every class name of the partition, novel ones included,
takes part (web CLIP saw them all); XMask3D's own training afterwards never sees a novel label.

The region bank holds every frame of the training rooms in memory (uint8 images and int16 class
maps at the depth resolution): a few MB for the demo's rooms.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from xmask3d_ros.config.training import ClipPretrainCfg
from xmask3d_ros.data.labels import LabelSet
from xmask3d_ros.data.scannet_layout import list_scannet_scenes, read_scannet_2d_scene
from xmask3d_ros.model.clip import ClipModel

__all__ = [
    "RegionBank",
    "load_region_bank",
    "pretrain_clip",
    "region_accuracy",
    "save_clip_weights",
]

_MASK_LOGIT = 10.0  # a binary region as mask logits (sigmoid ~ 1 inside, ~ 0 outside)


@dataclass(frozen=True)
class RegionBank:
    """Frames of some rooms: images and per-pixel indices into ``names`` (-1 = none)."""

    names: tuple[str, ...]
    images: npt.NDArray[np.uint8]  # (F, H, W, 3)
    classes: npt.NDArray[np.int16]  # (F, H, W)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def regions(self, frame: int, min_pixels: int) -> list[int]:
        """Classes covering at least ``min_pixels`` pixels of ``frame``."""
        counts = np.bincount(self.classes[frame].ravel() + 1, minlength=len(self.names) + 1)[1:]
        return [int(c) for c in np.flatnonzero(counts >= min_pixels)]


def load_region_bank(
    root: str | Path, split: str, labels: LabelSet, names: Sequence[str], *, frame_stride: int = 1
) -> RegionBank:
    """Every ``frame_stride``-th frame of the ScanNet-layout scenes of ``split``.

    Colour is resized to the depth resolution (as :class:`~xmask3d_ros.training.views.
    ViewDataset` does); label ids outside ``names`` become -1.
    """
    if labels.raw_ids is None:
        raise ValueError(f"label set {labels.name} has no raw ids: label images cannot be read")
    lut = np.full(1 << 16, -1, dtype=np.int16)
    for i, name in enumerate(names):
        lut[labels.raw_ids[labels.index(name)]] = i
    images: list[npt.NDArray[np.uint8]] = []
    classes: list[npt.NDArray[np.int16]] = []
    for scene in list_scannet_scenes(root, split):
        for frame in read_scannet_2d_scene(root, scene).frames[::frame_stride]:
            if frame.label_path is None:
                continue
            h, w = frame.depth_size[1], frame.depth_size[0]
            rgb = frame.load_rgb()
            if rgb.shape[:2] != (h, w):
                rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))
            raw = frame.load_label()
            if raw.shape != (h, w):
                raw = np.asarray(Image.fromarray(raw).resize((w, h), Image.Resampling.NEAREST))
            images.append(np.ascontiguousarray(rgb))
            classes.append(lut[raw.astype(np.int64)])
    if not images:
        raise ValueError(f"no labelled frames under {Path(root) / 'scannet_2d'} for split {split}")
    return RegionBank(tuple(names), np.stack(images), np.stack(classes))


def _region_batch(
    bank: RegionBank, frames: Sequence[int], min_pixels: int, flip: Sequence[bool]
) -> tuple[Tensor, Tensor, Tensor]:
    """Images (B, 3, H, W), mask logits (B, Q, H, W) and targets (B, Q) (-1 = padding)."""
    per_view = [bank.regions(f, min_pixels) for f in frames]
    q = max(1, max(len(r) for r in per_view))
    imgs = torch.from_numpy(bank.images[list(frames)]).permute(0, 3, 1, 2).float() / 255.0
    cls = torch.from_numpy(bank.classes[list(frames)].astype(np.int64))
    flips = torch.tensor(list(flip))
    imgs = torch.where(flips[:, None, None, None], imgs.flip(-1), imgs)
    cls = torch.where(flips[:, None, None], cls.flip(-1), cls)
    targets = torch.full((len(frames), q), -1, dtype=torch.int64)
    for i, regions in enumerate(per_view):
        targets[i, : len(regions)] = torch.tensor(regions, dtype=torch.int64)
    inside = cls[:, None] == targets[:, :, None, None]  # padding (-1) matches "no class" pixels
    masks = torch.where(inside & (targets[:, :, None, None] >= 0), _MASK_LOGIT, -_MASK_LOGIT)
    return imgs, masks, targets


def _text_features(clip: ClipModel, names: Sequence[str]) -> Tensor:
    tokens = clip.tokenizer([clip.prompt(n) for n in names]).to(clip.device)
    return clip.clip.encode_text(tokens).float()


def pretrain_clip(
    clip: ClipModel,
    bank: RegionBank,
    cfg: ClipPretrainCfg,
    *,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``clip`` (in place) so MaskCLIP region embeddings classify against class names.

    AdamW with linear warm-up and cosine decay over ``cfg.steps``; each step draws
    ``cfg.batch_views`` frames (seeded, random horizontal flips). Returns one row per logged
    step (loss, region accuracy). The model is frozen again (eval, no grad) on return.
    """
    params = list(clip.clip.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    try:
        for step in range(cfg.steps):
            warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
            lr = cfg.lr * warm * 0.5 * (1.0 + math.cos(math.pi * step / cfg.steps))
            for g in opt.param_groups:
                g["lr"] = lr
            frames = rng.integers(0, len(bank), size=cfg.batch_views)
            flip = rng.random(cfg.batch_views) < 0.5
            imgs, masks, targets = _region_batch(bank, frames.tolist(), cfg.min_region_pixels,
                                                 flip.tolist())
            region = clip.mask_embeddings_with_grad(imgs, masks)  # (B, Q, E)
            text = _text_features(clip, bank.names)  # (C, E)
            valid = targets >= 0
            logits = clip.clip.logit_scale.exp() * (
                F.normalize(region[valid], dim=-1) @ F.normalize(text, dim=-1).T
            )
            loss = F.cross_entropy(logits, targets[valid])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():  # open_clip clamps the temperature at 100 likewise
                clip.clip.logit_scale.clamp_(0, math.log(100.0))
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                acc = float((logits.argmax(-1) == targets[valid]).float().mean())
                row = {"step": float(step), "loss": float(loss.detach()), "acc": acc, "lr": lr,
                       "seconds": time.perf_counter() - start}
                history.append(row)
                if log is not None:
                    log(f"clip step {step}/{cfg.steps} loss {row['loss']:.3f} "
                        f"region acc {acc:.2f} ({row['seconds']:.0f} s)")
    finally:
        clip._freeze()
        clip._cache.clear()  # text embeddings computed before training are stale
    return history


@torch.no_grad()
def region_accuracy(
    clip: ClipModel, bank: RegionBank, *, min_pixels: int, batch_views: int = 32
) -> npt.NDArray[np.float64]:
    """Per-class top-1 accuracy (C,) of MaskCLIP region classification over ``bank`` (NaN
    for a class with no region): the zero-shot ceiling of the ensemble's CLIP term."""
    text = F.normalize(clip.text_embeddings(list(bank.names)), dim=-1)
    c = len(bank.names)
    hits = np.zeros(c)
    total = np.zeros(c)
    for s in range(0, len(bank), batch_views):
        frames = list(range(s, min(len(bank), s + batch_views)))
        imgs, masks, targets = _region_batch(bank, frames, min_pixels, [False] * len(frames))
        region = F.normalize(clip.mask_embeddings(imgs, masks), dim=-1)
        valid = targets >= 0
        pred = (region[valid] @ text.T).argmax(-1).numpy()
        truth = targets[valid].numpy()
        np.add.at(total, truth, 1)
        np.add.at(hits, truth, pred == truth)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, hits / np.maximum(total, 1), np.nan)


def save_clip_weights(clip: ClipModel, path: str | Path, *, dtype: torch.dtype = torch.float16,
                      vocabulary: Sequence[str] | None = None) -> Path:
    """The open_clip state dict as safetensors (half precision by default).

    ``vocabulary``: keep only the token-table rows of the tokens of these texts (plus "" and
    the prompt template), the rest load as zero rows. The 49k-row table dominates the file, and
    a tiny CLIP pretrained on class-name captions knows no other word anyway; the names'
    embeddings are unchanged (the causal text tower never reads a row it is not given).
    """
    from safetensors.torch import save_file

    from xmask3d_ros.model.clip import KEPT_TOKENS_KEY

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype).contiguous() if v.is_floating_point() else
             v.detach().cpu().contiguous() for k, v in clip.clip.state_dict().items()}
    if vocabulary is not None:
        texts = ["", *(clip.prompt(n) for n in vocabulary)]
        ids = torch.unique(clip.tokenizer(texts).reshape(-1))
        state["token_embedding.weight"] = state["token_embedding.weight"][ids].contiguous()
        state[KEPT_TOKENS_KEY] = ids.to(torch.int64).contiguous()
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "producer": "xmask3d_ros"})
    tmp.replace(path)
    return path
