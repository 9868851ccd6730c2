"""Training losses of XMask3D (reference-notes §1.6 and §1.14, ``models/utils/criterion.py``).

* :class:`SetCriterion`: Mask2Former set loss on the 2D masks: CE over C + 1 classes with weight
  ``eos_coef`` on the null class, sigmoid BCE and dice on importance-sampled points (uncertainty
  ``-|logit|``), Hungarian matching per prediction set, deep supervision over aux outputs.
* :func:`point_ce_losses`: 3D CE of fused and pure-3D point logits with an ignore index.
* :func:`mask_contrast_loss`: mask-level cosine regularisation of pure-3D features towards the
  (detached) MaskCLIP embedding of novel-/base-dominant masks, chosen with the GT base/novel flag.
* :func:`caption_loss`: view-level ``1 - cos(mean feature of the view, caption embedding)``.
* :func:`binary_loss`: BCE with ``pos_weight`` of the base/novel head.
* :class:`Criterion`: all of them, weighted by :class:`~xmask3d_ros.config.model.LossCfg`; the
  mask-level term has weight 0 before ``mask_contra_start_epoch``.

A loss with nothing to supervise returns a zero that is still connected to its inputs' graph, so
every parameter gets a (zero) gradient, as DDP needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from xmask3d_ros.config.model import LossCfg
from xmask3d_ros.model.matcher import HungarianMatcher, SetTarget, point_sample

__all__ = [
    "Criterion",
    "CriterionInputs",
    "MaskContrastView",
    "SetCriterion",
    "SetPrediction",
    "binary_loss",
    "caption_loss",
    "dice_loss",
    "mask_confidence",
    "mask_contrast_loss",
    "point_ce_losses",
    "sigmoid_ce_loss",
    "uncertain_point_coords",
]


def _zero(*tensors: Tensor | None) -> Tensor:
    """A 0 connected to the graph of ``tensors`` (or a plain 0 when there is none)."""
    parts = [t.sum() * 0.0 for t in tensors if t is not None]
    return torch.stack(parts).sum() if parts else torch.zeros(())


# ---- Mask2Former set loss ---------------------------------------------------------------------


class SetPrediction(NamedTuple):
    """One set of mask predictions (final layer or one auxiliary layer)."""

    logits: Tensor  # (B, Q, C + 1) class logits, null class last
    masks: Tensor  # (B, Q, h, w) mask logits


def sigmoid_ce_loss(logits: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """(R, P) logits and targets -> sum over masks of the mean BCE over points, / num_masks."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """(R, P) -> sum over masks of ``1 - (2 p.t + 1) / (sum p + sum t + 1)``, / num_masks."""
    p = logits.sigmoid().flatten(1)
    num = 2.0 * (p * targets).sum(-1)
    den = p.sum(-1) + targets.sum(-1)
    return (1.0 - (num + 1.0) / (den + 1.0)).sum() / num_masks


def uncertain_point_coords(
    mask_logits: Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_ratio: float,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(R, H, W) logits -> (R, num_points, 2) normalised (x, y) points (PointRend sampling).

    ``num_points * oversample_ratio`` uniform candidates; the ``importance_ratio`` share with the
    highest uncertainty ``-|logit|`` is kept, the rest are fresh uniform points.
    """
    r = mask_logits.shape[0]
    dev = generator.device if generator is not None else mask_logits.device
    n_cand = int(num_points * oversample_ratio)
    cand = torch.rand(r, n_cand, 2, generator=generator, device=dev).to(mask_logits.device)
    uncertainty = -point_sample(mask_logits, cand).abs()  # (R, n_cand)
    n_imp = int(importance_ratio * num_points)
    idx = uncertainty.topk(n_imp, dim=1).indices
    coords = cand.gather(1, idx.unsqueeze(-1).expand(-1, -1, 2))
    n_rand = num_points - n_imp
    if n_rand > 0:
        extra = torch.rand(r, n_rand, 2, generator=generator, device=dev).to(mask_logits.device)
        coords = torch.cat([coords, extra], dim=1)
    return coords


class SetCriterion:
    """Mask2Former ``SetCriterion`` (labels + masks losses), unweighted.

    Keys: ``loss_ce``, ``loss_mask``, ``loss_dice`` for the final predictions and the same with
    ``_{i}`` for auxiliary prediction ``i`` (deep supervision, each matched separately).
    ``num_masks`` = total target masks of the batch (all-reduced when torch.distributed runs),
    at least 1.
    """

    def __init__(
        self,
        matcher: HungarianMatcher,
        *,
        eos_coef: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_ratio: float = 0.75,
    ) -> None:
        self.matcher = matcher
        self.eos_coef = float(eos_coef)
        self.num_points = int(num_points)
        self.oversample_ratio = float(oversample_ratio)
        self.importance_ratio = float(importance_ratio)

    def loss_labels(
        self, pred: SetPrediction, targets: Sequence[SetTarget], indices: list[tuple[Tensor, Tensor]]
    ) -> Tensor:
        logits = pred.logits.float()
        b, q, c1 = logits.shape
        target_classes = torch.full((b, q), c1 - 1, dtype=torch.int64, device=logits.device)
        for i, (t, (src, tgt)) in enumerate(zip(targets, indices)):
            target_classes[i, src.to(logits.device)] = t.labels.to(logits.device)[tgt]
        weight = torch.ones(c1, device=logits.device)
        weight[-1] = self.eos_coef
        return F.cross_entropy(logits.transpose(1, 2), target_classes, weight)

    def loss_masks(
        self,
        pred: SetPrediction,
        targets: Sequence[SetTarget],
        indices: list[tuple[Tensor, Tensor]],
        num_masks: float,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        src = torch.cat([pred.masks[i, s.to(pred.masks.device)] for i, (s, _) in enumerate(indices)])
        if src.shape[0] == 0:
            z = _zero(pred.masks)
            return z, z.clone()
        tgt = torch.cat(
            [t.masks.to(pred.masks)[j.to(pred.masks.device)] for t, (_, j) in zip(targets, indices)]
        )
        with torch.no_grad():
            coords = uncertain_point_coords(
                src.detach(),
                self.num_points,
                self.oversample_ratio,
                self.importance_ratio,
                generator=generator,
            )
            labels = point_sample(tgt.float(), coords)
        logits = point_sample(src, coords)
        return (
            sigmoid_ce_loss(logits, labels, num_masks),
            dice_loss(logits, labels, num_masks),
        )

    def __call__(
        self,
        final: SetPrediction,
        targets: Sequence[SetTarget],
        aux: Sequence[SetPrediction] = (),
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        num = float(sum(int(t.labels.numel()) for t in targets))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            n = torch.tensor([num], device=final.logits.device)
            torch.distributed.all_reduce(n)
            num = float(n.item()) / torch.distributed.get_world_size()
        num_masks = max(num, 1.0)
        losses: dict[str, Tensor] = {}
        for suffix, pred in [("", final), *((f"_{i}", p) for i, p in enumerate(aux))]:
            indices = self.matcher(pred.logits, pred.masks, targets, generator=generator)
            bce, dice = self.loss_masks(pred, targets, indices, num_masks, generator)
            losses["loss_ce" + suffix] = self.loss_labels(pred, targets, indices)
            losses["loss_mask" + suffix] = bce
            losses["loss_dice" + suffix] = dice
        return losses


# ---- point-level losses -----------------------------------------------------------------------


def point_ce_losses(
    fused_logits: Tensor,
    pure_logits: Tensor,
    labels: Tensor,
    ignore_index: int,
    class_weights: Tensor | None = None,
) -> dict[str, Tensor]:
    """``loss_3d`` / ``loss_3d_pure``: CE of (N, C + 1) logits vs (N,) labels, ``ignore_index``.

    In the reference the logits carry a null column and ``ignore_index`` = number of base
    classes, so novel and unlabelled points are ignored. All points ignored gives 0 (the
    reference relabels one point to avoid the NaN of an empty mean; we do not invent a label).
    ``class_weights`` (C + 1,) make it torch's weighted CE (the reference has none).
    """
    out = {}
    valid = labels != ignore_index
    for key, logits in (("loss_3d", fused_logits), ("loss_3d_pure", pure_logits)):
        if bool(valid.any()):
            w = None if class_weights is None else class_weights.to(logits)
            out[key] = F.cross_entropy(logits, labels, weight=w, ignore_index=ignore_index)
        else:
            out[key] = _zero(logits)
    return out


def binary_loss(logits: Tensor, labels: Tensor, pos_weight: float) -> Tensor:
    """BCE-with-logits of the base/novel head; labels 1 = base, 0 = novel, anything else ignored."""
    x = logits.reshape(-1)
    y = labels.reshape(-1)
    valid = (y == 0) | (y == 1)
    if not bool(valid.any()):
        return _zero(logits)
    pw = torch.tensor([pos_weight], dtype=x.dtype, device=x.device)
    return F.binary_cross_entropy_with_logits(x[valid], y[valid].to(x.dtype), pos_weight=pw)


def caption_loss(features: Sequence[Tensor], captions: Tensor) -> Tensor:
    """Mean over views of ``1 - cos(mean of features_i, captions_i)``.

    ``features``: per view an (N_i, E) tensor (all points, or the covered points for the 2D
    term); ``captions`` (B, E) CLIP text embeddings of the view captions. Views with no rows are
    skipped (the reference would average an empty tensor into NaN).
    """
    if len(features) != captions.shape[0]:
        raise ValueError(f"{len(features)} views but {captions.shape[0]} captions")
    keep = [i for i, f in enumerate(features) if f.shape[0] > 0]
    if not keep:
        return _zero(*features)
    means = torch.stack([features[i].mean(0) for i in keep])
    return (1.0 - F.cosine_similarity(means, captions[keep].to(means), dim=-1)).mean()


# ---- mask-level regularisation ----------------------------------------------------------------


@dataclass(frozen=True)
class MaskContrastView:
    """Everything :func:`mask_contrast_loss` needs from one view (raw predicted masks)."""

    point_mask_logits: Tensor  # (Q, Nv) mask logits at the visible points' mask-grid cells
    confidence: Tensor  # (Q,) mean probability of each mask over its pixels > 0.5
    clip_embed: Tensor  # (Q, E) MaskCLIP embedding of each mask (target, detached here)
    feat_3d: Tensor  # (Nv, E) pure-3D point features (gradients flow here)
    binary_labels: Tensor  # (Nv,) 1 = base, 0 = novel, other = ignored


def mask_confidence(mask_logits: Tensor) -> Tensor:
    """(Q, H, W) logits -> (Q,) mean sigmoid over the pixels where it exceeds 0.5 (0 if none)."""
    p = mask_logits.detach().float().sigmoid().flatten(1)
    on = p > 0.5
    return (p * on).sum(1) / on.sum(1).clamp_min(1)


def select_contrast_masks(view: MaskContrastView, cfg: LossCfg) -> tuple[Tensor, Tensor]:
    """Indices of the chosen masks (novel-dominant first, then base-dominant) and (Q, Nv) cover.

    A mask counts if it covers >= ``contra_min_points`` points (sigmoid >= 0.5). Novel-dominant:
    novel points > ``contra_novel_ratio`` x other points and > ``contra_novel_min``; otherwise
    base-dominant: base points > ``contra_base_ratio`` x other points and > ``contra_base_min``.
    The most confident ``contra_max_novel`` / ``contra_max_base`` of each are used.
    """
    with torch.no_grad():
        cover = view.point_mask_logits.detach().sigmoid() >= 0.5
        n = cover.sum(1)
        lab = view.binary_labels.to(cover.device)
        novel = (cover & (lab == 0)).sum(1)
        base = (cover & (lab == 1)).sum(1)
        ok = n >= cfg.contra_min_points
        is_novel = ok & (novel > cfg.contra_novel_ratio * (n - novel)) & (novel > cfg.contra_novel_min)
        is_base = (
            ok & ~is_novel & (base > cfg.contra_base_ratio * (n - base)) & (base > cfg.contra_base_min)
        )
        conf = view.confidence.detach().float().to(cover.device)
        chosen = []
        for flag, limit in ((is_novel, cfg.contra_max_novel), (is_base, cfg.contra_max_base)):
            idx = flag.nonzero(as_tuple=True)[0]
            order = torch.sort(conf[idx], descending=True, stable=True).indices
            chosen.append(idx[order][:limit])
        return torch.cat(chosen), cover


def mask_contrast_loss(views: Sequence[MaskContrastView], cfg: LossCfg) -> Tensor:
    """``loss_3d_contra``: mean of ``1 - cos(mean 3D feature in mask, MaskCLIP embedding)``.

    Masks are chosen per view by :func:`select_contrast_masks`; the MaskCLIP embedding is a
    detached target. No chosen mask in any view gives 0 (graph-connected). Deviation: the
    reference forces mask 0 to cover every point when no mask has 10 points; we skip the view.
    """
    pooled, targets = [], []
    for v in views:
        idx, cover = select_contrast_masks(v, cfg)
        if idx.numel() == 0:
            continue
        w = cover[idx].to(v.feat_3d.dtype)  # (S, Nv)
        pooled.append((w @ v.feat_3d) / w.sum(1, keepdim=True))
        targets.append(v.clip_embed[idx].detach())
    if not pooled:
        return _zero(*(v.feat_3d for v in views))
    a, b = torch.cat(pooled), torch.cat(targets).to(pooled[0])
    return (1.0 - F.cosine_similarity(a, b, dim=-1)).mean()


# ---- everything, weighted ---------------------------------------------------------------------


@dataclass
class CriterionInputs:
    """What one training step hands to :class:`Criterion`; a missing part skips its losses."""

    set_pred: SetPrediction | None = None  # final mask predictions
    set_aux: Sequence[SetPrediction] = ()  # auxiliary predictions (deep supervision)
    set_targets: Sequence[SetTarget] = ()  # per-image 2D targets
    fused_logits: Tensor | None = None  # (N, C + 1) all points of the batch
    pure_logits: Tensor | None = None  # (N, C + 1)
    labels_3d: Tensor | None = None  # (N,) compact base labels, ignore_index elsewhere
    ignore_index: int = -100  # CE ignore index (reference: number of base classes)
    contrast_views: Sequence[MaskContrastView] = ()  # per view, for loss_3d_contra
    captions: Tensor | None = None  # (B, E) view-caption text embeddings
    caption_fused: Sequence[Tensor] = field(default_factory=tuple)  # per view (N_i, E)
    caption_3d: Sequence[Tensor] = field(default_factory=tuple)  # per view (N_i, E)
    caption_2d: Sequence[Tensor] = field(default_factory=tuple)  # per view (covered_i, E)
    binary_logits: Tensor | None = None  # (N,) or (N, 1)
    binary_labels: Tensor | None = None  # (N,) 1 base, 0 novel, other ignored


class Criterion:
    """All XMask3D losses, each multiplied by its :class:`LossCfg` weight.

    Returns a dict of weighted loss tensors with the reference names (``loss_ce``, ``loss_mask``,
    ``loss_dice`` and their ``_{i}`` aux copies, ``loss_3d``, ``loss_3d_pure``,
    ``loss_3d_contra``, ``loss_explicit_contra``, ``loss_explicit_contra_3d``,
    ``loss_explicit_contra_2d_pre``, ``loss_binary``); their sum is the training loss.
    """

    def __init__(self, cfg: LossCfg) -> None:
        self.cfg = cfg
        # (C + 1,) weights of the point CE losses, set by the trainer from the training
        # labels when loss.ce_3d_balance > 0 (None = the reference's plain CE)
        self.class_weights: Tensor | None = None
        self.matcher = HungarianMatcher(
            cost_class=cfg.mask_ce,
            cost_mask=cfg.mask_bce,
            cost_dice=cfg.mask_dice,
            num_points=cfg.num_points,
        )
        self.set_criterion = SetCriterion(
            self.matcher,
            eos_coef=cfg.no_object_weight,
            num_points=cfg.num_points,
            oversample_ratio=cfg.oversample_ratio,
            importance_ratio=cfg.importance_ratio,
        )

    def weights(self, epoch: int) -> dict[str, float]:
        """Weight per loss name at ``epoch`` (0-based; aux copies share their base weight)."""
        c = self.cfg
        return {
            "loss_ce": c.mask_ce,
            "loss_mask": c.mask_bce,
            "loss_dice": c.mask_dice,
            "loss_3d": c.ce_3d,
            "loss_3d_pure": c.ce_3d_pure,
            "loss_3d_contra": c.mask_contra if epoch >= c.mask_contra_start_epoch else 0.0,
            "loss_explicit_contra": c.caption_fused,
            "loss_explicit_contra_3d": c.caption_3d,
            "loss_explicit_contra_2d_pre": c.caption_2d,
            "loss_binary": c.binary,
        }

    def __call__(
        self, x: CriterionInputs, *, epoch: int, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        raw: dict[str, Tensor] = {}
        if x.set_pred is not None:
            raw.update(self.set_criterion(x.set_pred, x.set_targets, x.set_aux, generator=generator))
        if x.fused_logits is not None and x.pure_logits is not None and x.labels_3d is not None:
            raw.update(point_ce_losses(x.fused_logits, x.pure_logits, x.labels_3d,
                                       x.ignore_index, self.class_weights))
        if x.contrast_views:
            raw["loss_3d_contra"] = mask_contrast_loss(x.contrast_views, self.cfg)
        if x.captions is not None:
            for key, feats in (
                ("loss_explicit_contra", x.caption_fused),
                ("loss_explicit_contra_3d", x.caption_3d),
                ("loss_explicit_contra_2d_pre", x.caption_2d),
            ):
                if feats:
                    raw[key] = caption_loss(feats, x.captions)
        if x.binary_logits is not None and x.binary_labels is not None:
            raw["loss_binary"] = binary_loss(
                x.binary_logits, x.binary_labels, self.cfg.binary_pos_weight
            )
        w = self.weights(epoch)
        return {k: v * w[k.rsplit("_", 1)[0] if k[-1].isdigit() else k] for k, v in raw.items()}
