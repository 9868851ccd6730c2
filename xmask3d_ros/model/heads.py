"""Classification heads and inference rules of XMask3D (reference-notes §1.10-1.13).

* :func:`cosine_logits`: ``logit_scale * cos(feature, text)``, optionally with a null column.
* :func:`gate_probabilities`: the binary base/novel head applied to class scores: ``hard``
  (reference: argmax restricted to base or novel classes), ``soft`` (PLA's calibration: softmax
  within base and within novel classes, times p(base) / 1 - p(base), renormalised) or ``off``.
* :func:`ensemble_log_scores`: ODISE-style geometric ensemble of the fused-feature probabilities
  with the MaskCLIP probabilities of the mask covering each point.
* :class:`SceneVotes`: per-view argmax votes merged over a scene, never-seen points labelled from
  their nearest seen neighbour (scipy ``cKDTree``).

Everything is vectorised over points; class axes are the last dimension.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "GATING_MODES",
    "SceneVotes",
    "cosine_logits",
    "ensemble_log_scores",
    "gate_probabilities",
]

GATING_MODES = ("hard", "soft", "off")


def cosine_logits(
    features: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    null_embed: Tensor | None = None,
) -> Tensor:
    """(N, E) features, (C, E) text embeddings -> (N, C) or (N, C + 1) logits.

    ``logit_scale * cos(feature, text)``; with ``null_embed`` (E,) a last "null" column
    ``logit_scale * cos(feature, null)`` is appended (the reference's no-object class).
    """
    if features.shape[-1] != text.shape[-1]:
        raise ValueError(
            f"feature width {features.shape[-1]} differs from text width {text.shape[-1]}"
        )
    t = text if null_embed is None else torch.cat([text, null_embed.reshape(1, -1)])
    f = F.normalize(features, dim=-1)
    t = F.normalize(t.to(f.dtype), dim=-1)
    return logit_scale * (f @ t.t())


def _group_softmax(scores: Tensor, group: Tensor) -> Tensor:
    """Softmax of ``scores`` over the columns where ``group`` is True; 0 elsewhere."""
    masked = scores.masked_fill(~group, float("-inf"))
    if not bool(group.any()):
        return torch.zeros_like(scores)
    return torch.softmax(masked, dim=-1)


def gate_probabilities(
    scores: Tensor,
    p_base: Tensor,
    base_classes: Tensor,
    mode: str,
    *,
    threshold: float = 0.5,
) -> Tensor:
    """Class probabilities (N, C) after base/novel gating.

    ``scores`` (N, C) are logits or log-scores (only differences within a row matter);
    ``p_base`` (N,) the binary head's probability that a point (or mask) is of a base class;
    ``base_classes`` (C,) bool, True for classes seen in training (a null column counts as base).

    * ``off``: softmax over all classes.
    * ``hard``: softmax over base classes where ``p_base > threshold``, else over novel classes
      (reference: the other group's scores set to -1e10 before the argmax).
    * ``soft``: ``p_base * softmax_base + (1 - p_base) * softmax_novel``, renormalised (PLA
      ``correct_seg_pred_with_binary_pred``). As ``p_base`` tends to 1 (0) this tends to the
      ``hard`` result.

    If the vocabulary has no base (or no novel) class, gating has nothing to choose between and
    the result is the plain softmax (the reference would produce an arbitrary argmax there).
    """
    if mode not in GATING_MODES:
        raise ValueError(f"gating mode {mode!r} is not one of {', '.join(GATING_MODES)}")
    base = base_classes.to(device=scores.device, dtype=torch.bool)
    if base.shape != scores.shape[-1:]:
        raise ValueError(f"base_classes has shape {tuple(base.shape)}, scores {tuple(scores.shape)}")
    if mode == "off" or bool(base.all()) or not bool(base.any()):
        return torch.softmax(scores, dim=-1)
    p_b = _group_softmax(scores, base)
    p_n = _group_softmax(scores, ~base)
    pb = p_base.to(scores.dtype).reshape(-1, 1)
    if mode == "hard":
        return torch.where(pb > threshold, p_b, p_n)
    out = p_b * pb + p_n * (1.0 - pb)
    return out / out.sum(-1, keepdim=True).clamp_min(torch.finfo(out.dtype).tiny)


def ensemble_log_scores(
    fused_logits: Tensor,
    clip_logits: Tensor,
    point_ids: Tensor,
    base_classes: Tensor,
    *,
    base_ratio: float,
    novel_ratio: float,
) -> Tensor:
    """Geometric ensemble (reference-notes §1.12) as log-scores (N, C).

    ``fused_logits`` (N, C): ``logit_scale * cos(fused feature, text)`` per point;
    ``clip_logits`` (Q, C): ``logit_scale * cos(MaskCLIP embedding, text)`` per mask;
    ``point_ids`` (N,): index of the mask covering each point, -1 for none.
    For a covered point and class c: ``r_c log p_fused + (1 - r_c) log p_clip`` with
    ``r_c = base_ratio`` for base (training) classes and ``novel_ratio`` otherwise; uncovered
    points keep ``log p_fused``. Log-probabilities come from ``log_softmax`` (no log of an
    underflowed product). Feed the result to :func:`gate_probabilities` or take the argmax.
    """
    log_f = torch.log_softmax(fused_logits, dim=-1)
    if clip_logits.shape[0] == 0:
        return log_f
    log_c = torch.log_softmax(clip_logits.to(log_f.dtype), dim=-1)
    base = base_classes.to(device=log_f.device, dtype=torch.bool)
    r = torch.where(
        base,
        torch.tensor(base_ratio, dtype=log_f.dtype, device=log_f.device),
        torch.tensor(novel_ratio, dtype=log_f.dtype, device=log_f.device),
    )
    covered = point_ids >= 0
    mixed = r * log_f + (1.0 - r) * log_c[point_ids.clamp_min(0)]
    return torch.where(covered.reshape(-1, 1), mixed, log_f)


class SceneVotes:
    """Scene-level merge of per-view labels by majority vote (reference-notes §1.13).

    Each view adds one vote per visible point for its predicted class. :meth:`labels` takes the
    class with most votes (ties: lowest class index) and gives never-seen points the label of
    the nearest seen point. Votes are uint16 (a point seen in more than 65,535 views saturates).
    """

    def __init__(self, num_points: int, num_classes: int) -> None:
        if num_points < 0 or num_classes <= 0:
            raise ValueError(f"need num_points >= 0 and num_classes > 0, got {num_points}, {num_classes}")
        self.num_classes = int(num_classes)
        self.votes = np.zeros((int(num_points), self.num_classes), dtype=np.uint16)
        self.views = 0

    @property
    def seen(self) -> npt.NDArray[np.bool_]:
        """(N,) bool: points with at least one vote."""
        return np.asarray(self.votes.any(axis=1))

    def add(self, point_index: Any, labels: Any) -> None:
        """One view: ``point_index`` (Nv,) scene indices of its visible points, ``labels`` (Nv,)."""
        idx = np.asarray(point_index, dtype=np.int64).reshape(-1)
        lab = np.asarray(labels, dtype=np.int64).reshape(-1)
        if idx.shape != lab.shape:
            raise ValueError(f"point_index {idx.shape} and labels {lab.shape} differ in length")
        if idx.size and (idx.min() < 0 or idx.max() >= self.votes.shape[0]):
            raise ValueError(f"point_index outside [0, {self.votes.shape[0]})")
        if lab.size and (lab.min() < 0 or lab.max() >= self.num_classes):
            raise ValueError(f"labels outside [0, {self.num_classes})")
        flat = self.votes.reshape(-1)
        hit, counts = np.unique(idx * self.num_classes + lab, return_counts=True)
        total = flat[hit].astype(np.int64) + counts
        flat[hit] = np.minimum(total, np.iinfo(np.uint16).max).astype(np.uint16)
        self.views += 1

    def labels(self, xyz: Any) -> npt.NDArray[np.int64]:
        """(N,) int64 scene labels; -1 everywhere if no view saw any point.

        ``xyz`` (N, 3): point coordinates for the nearest-seen-neighbour fill.
        """
        from scipy.spatial import cKDTree

        pts = np.asarray(xyz, dtype=np.float64)
        if pts.shape != (self.votes.shape[0], 3):
            raise ValueError(f"xyz must be ({self.votes.shape[0]}, 3), got {pts.shape}")
        out = self.votes.argmax(axis=1).astype(np.int64)
        seen = self.seen
        if not seen.any():
            return np.full(pts.shape[0], -1, dtype=np.int64)
        unseen = np.flatnonzero(~seen)
        if unseen.size:
            seen_idx = np.flatnonzero(seen)
            _, nn = cKDTree(pts[seen_idx]).query(pts[unseen], k=1)
            out[unseen] = out[seen_idx[np.asarray(nn, dtype=np.int64)]]
        return out
