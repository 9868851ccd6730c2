"""A segmenter's classification rule, applied at query time to a voxel's stored channels.

XMask3D does not label a point by the cosine argmax of one feature: for a vocabulary with base
(trained) and novel classes it takes a per-class geometric ensemble of the fused feature's
probabilities with the MaskCLIP probabilities of the mask covering the point, then gates with
the binary head's p(base) (reference-notes §1.10-1.12; :mod:`xmask3d_ros.model.heads`). Both
steps need the vocabulary, which is only known when a query arrives. So the map keeps the
ingredients per voxel (mean fused feature, mean MaskCLIP embedding, mean p(base)) and the query
engine applies this rule, in numpy, to each block of voxels.

:class:`ClassRule` carries the rule's numbers (the segmenter builds it from its model config);
:func:`class_probabilities` evaluates it on cosine scores. A label is *base* when its normalised
name is one of the names the model was trained on (:func:`normalize_name`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["ClassRule", "class_probabilities", "normalize_name"]

GATING_MODES = ("hard", "soft", "off")


def normalize_name(name: str) -> str:
    """Lower case, ``_`` as a space, single spaces: 'Shower_Curtain ' -> 'shower curtain'."""
    return " ".join(name.replace("_", " ").lower().split())


@dataclasses.dataclass(frozen=True)
class ClassRule:
    """The numbers of a segmenter's classification rule (see the module docstring).

    ``logit_scale`` is the model's temperature on cosines; ``base_names`` the classes it was
    trained on (empty: no label is base, so gating has nothing to choose between and every
    label takes ``novel_ratio``).
    """

    logit_scale: float
    base_names: frozenset[str] = frozenset()
    ensemble: bool = True
    base_ratio: float = 0.65
    novel_ratio: float = 0.35
    gating: str = "hard"
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not (np.isfinite(self.logit_scale) and self.logit_scale > 0):
            raise ValueError(f"logit_scale must be > 0, got {self.logit_scale}")
        if self.gating not in GATING_MODES:
            raise ValueError(f"gating {self.gating!r} is not one of {', '.join(GATING_MODES)}")
        for key in ("base_ratio", "novel_ratio"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{key} must lie in [0, 1], got {getattr(self, key)}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold}")
        object.__setattr__(self, "base_names", frozenset(normalize_name(n) for n in self.base_names))

    def base_flags(self, labels: Sequence[str]) -> npt.NDArray[np.bool_]:
        """(L,) True where a label names a class the model was trained on."""
        return np.array([normalize_name(label) in self.base_names for label in labels], dtype=bool)


def _softmax(log_scores: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
    """Row softmax over all columns, or over ``columns`` only (0 elsewhere)."""
    if columns is None:
        return torch.softmax(log_scores, dim=1)
    return torch.softmax(log_scores.masked_fill(~columns, float("-inf")), dim=1)


def class_probabilities(
    rule: ClassRule,
    fused_cos: npt.NDArray[np.float32],
    clip_cos: npt.NDArray[np.float32] | None,
    covered: npt.NDArray[np.bool_],
    base_prob: npt.NDArray[np.float32],
    has_base_prob: npt.NDArray[np.bool_],
    base: npt.NDArray[np.bool_],
) -> npt.NDArray[np.float32]:
    """(k, L) class probabilities of k voxels for L labels under ``rule``.

    ``fused_cos`` / ``clip_cos`` (k, L): cosines of the voxel's mean fused feature / mean
    MaskCLIP embedding with the labels' text embeddings (``clip_cos`` rows are read only where
    ``covered``); ``base_prob`` (k,) mean p(base), used where ``has_base_prob``; ``base`` (L,)
    the labels' base flags. Covered voxels take ``r_c log p_fused + (1 - r_c) log p_clip``
    (``r_c`` = base or novel ratio), then ``hard`` gating keeps the base labels where
    p(base) > threshold and the novel ones elsewhere, ``soft`` mixes the two group softmaxes by
    p(base); voxels without p(base), and vocabularies without both groups, are not gated. The
    same arithmetic as :func:`xmask3d_ros.model.heads.ensemble_log_scores` and
    ``gate_probabilities`` on one view's point.
    """
    # torch's row kernels: numpy's reductions over short rows cost ~3x more here
    s = float(rule.logit_scale)
    log_p = torch.log_softmax(torch.from_numpy(fused_cos) * s, dim=1)
    cov = torch.from_numpy(covered)
    if clip_cos is not None and rule.ensemble and bool(cov.any()):
        b = torch.from_numpy(base)
        r = torch.where(b, torch.tensor(rule.base_ratio), torch.tensor(rule.novel_ratio)).float()
        log_c = torch.log_softmax(torch.from_numpy(clip_cos[covered]) * s, dim=1)
        log_p[cov] = r * log_p[cov] + (1.0 - r) * log_c
    has = torch.from_numpy(has_base_prob)
    if rule.gating == "off" or base.all() or not base.any() or not bool(has.any()):
        out: npt.NDArray[np.float32] = _softmax(log_p).numpy()
        return out
    b = torch.from_numpy(base)
    pb = torch.from_numpy(np.ascontiguousarray(base_prob, dtype=np.float32))
    if rule.gating == "hard":  # one softmax over each row's allowed group
        allowed = torch.where((pb > rule.threshold)[:, None], b, ~b)
        allowed[~has] = True
        out = _softmax(log_p, allowed).numpy()
        return out
    probs = _softmax(log_p)
    g = has.nonzero().squeeze(1)
    lp = log_p[g]
    p_base, p_novel = _softmax(lp, b.expand_as(lp)), _softmax(lp, (~b).expand_as(lp))
    w = pb[g, None]
    mixed = p_base * w + p_novel * (1.0 - w)
    probs[g] = mixed / mixed.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    out = probs.numpy()
    return out
