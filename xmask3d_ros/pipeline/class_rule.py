"""A segmenter's classification rule, applied at query time to a voxel's stored channels.

XMask3D does not label a point by the cosine argmax of one feature: for a vocabulary with base
(trained) and novel classes it takes a per-class geometric ensemble of the fused feature's
probabilities with the MaskCLIP probabilities of the mask covering the point, then gates with
the binary head's p(base) (reference-notes §1.10-1.12; :mod:`xmask3d_ros.model.heads`). Both
steps need the vocabulary, which is only known when a query arrives. So the map keeps the
ingredients per voxel (mean fused feature, mean MaskCLIP embedding, mean p(base)) and the query
engine applies this rule, with the model's own head functions, to each block of voxels.

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

from xmask3d_ros.model.heads import GATING_MODES, ensemble_log_scores, gate_probabilities

__all__ = ["ClassRule", "class_probabilities", "normalize_name"]


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
    the labels' base flags. The model's own functions do the arithmetic
    (:func:`~xmask3d_ros.model.heads.ensemble_log_scores`, then
    :func:`~xmask3d_ros.model.heads.gate_probabilities`), each voxel standing for a point whose
    "mask" is its own MaskCLIP mean; voxels without p(base) are not gated.
    """
    s = float(rule.logit_scale)
    fused_logits = torch.from_numpy(fused_cos) * s
    b = torch.from_numpy(base)
    cov = torch.from_numpy(covered)
    if clip_cos is not None and rule.ensemble and bool(cov.any()):
        own = torch.where(cov, torch.arange(cov.shape[0]), torch.tensor(-1))
        log_s = ensemble_log_scores(fused_logits, torch.from_numpy(clip_cos) * s, own, b,
                                    base_ratio=rule.base_ratio, novel_ratio=rule.novel_ratio)
    else:
        log_s = torch.log_softmax(fused_logits, dim=1)
    has = torch.from_numpy(has_base_prob)
    pb = torch.from_numpy(np.ascontiguousarray(base_prob, dtype=np.float32))
    if bool(has.all()):
        probs = gate_probabilities(log_s, pb, b, rule.gating, threshold=rule.threshold)
    else:
        probs = torch.softmax(log_s, dim=1)
        if bool(has.any()):
            probs[has] = gate_probabilities(log_s[has], pb[has], b, rule.gating,
                                            threshold=rule.threshold)
    out: npt.NDArray[np.float32] = probs.numpy()
    return out
