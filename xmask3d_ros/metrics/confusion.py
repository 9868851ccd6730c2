"""Dataset-level confusion matrix and the open-vocabulary IoU summary (reference-notes §2.5).

Two conventions for a class with no ground-truth point:

- ``"xmask3d"`` (XMask3D ``intersectionAndUnionGPU`` and PLA): IoU_c = I_c / (U_c + 1e-10), so
  a class absent from GT *and* predictions scores 0 and still counts in every mean; a class
  absent from GT but predicted also scores 0.
- ``"scannet"`` (ScanNet benchmark / OpenScene ``util/metric.py``): classes with no GT point
  are skipped (IoU NaN, left out of the means).

Ignore handling (§2.5): points whose GT is not an evaluated class (ignore value, excluded
classes such as otherfurniture/clutter) are dropped before counting, which is what XMask3D's
"overwrite the prediction of ignored GT points by the ignore value" amounts to. A prediction
outside the evaluated classes on a valid GT point counts as a miss (a false negative of the
GT class, no false positive anywhere) — PLA avoids it by restricting scores to valid classes.

hIoU = 2 b n / (b + n) of the base and novel mIoU (0 when both are 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["CONVENTIONS", "ConfusionMatrix", "IoUResult", "harmonic_iou", "iou_from_confusion"]

CONVENTIONS = ("xmask3d", "scannet")
_EPS = 1e-10  # XMask3D's union epsilon


def harmonic_iou(base: float, novel: float) -> float:
    """2 b n / (b + n); 0 when b + n is 0; NaN if either is NaN."""
    if np.isnan(base) or np.isnan(novel):
        return float("nan")
    s = base + novel
    return 0.0 if s <= 0 else float(2.0 * base * novel / s)


@dataclass
class ConfusionMatrix:
    """(C, C) int64 counts, rows = ground truth, columns = prediction, over ``num_classes``
    label-set classes; :meth:`update` ignores GT outside ``valid`` (and outside 0..C-1)."""

    num_classes: int
    valid: npt.NDArray[np.bool_] | None = None  # (C,) classes evaluated; None = all
    matrix: npt.NDArray[np.int64] = field(init=False)
    missed: npt.NDArray[np.int64] = field(init=False)  # (C,) valid GT predicted out of range

    def __post_init__(self) -> None:
        c = int(self.num_classes)
        if c <= 0:
            raise ValueError(f"num_classes must be > 0, got {c}")
        self.matrix = np.zeros((c, c), dtype=np.int64)
        self.missed = np.zeros(c, dtype=np.int64)
        if self.valid is None:
            self.valid = np.ones(c, dtype=bool)
        else:
            v = np.asarray(self.valid, dtype=bool)
            if v.shape != (c,):
                raise ValueError(f"valid must have shape ({c},), got {v.shape}")
            self.valid = v

    @classmethod
    def for_indices(cls, num_classes: int, evaluated: Sequence[int]) -> ConfusionMatrix:
        valid = np.zeros(num_classes, dtype=bool)
        valid[np.asarray(evaluated, dtype=np.int64)] = True
        return cls(num_classes, valid)

    def update(self, gt: npt.ArrayLike, pred: npt.ArrayLike) -> None:
        """Add (N,) int GT and prediction labels of one scene/view."""
        g = np.asarray(gt).astype(np.int64).reshape(-1)
        p = np.asarray(pred).astype(np.int64).reshape(-1)
        if g.shape != p.shape:
            raise ValueError(f"gt and pred must have the same length, got {g.shape}, {p.shape}")
        c = self.num_classes
        assert self.valid is not None
        keep = (g >= 0) & (g < c)
        keep[keep] = self.valid[g[keep]]
        g, p = g[keep], p[keep]
        inside = (p >= 0) & (p < c)
        self.matrix += np.bincount(g[inside] * c + p[inside], minlength=c * c).reshape(c, c)
        self.missed += np.bincount(g[~inside], minlength=c)

    def merge(self, other: ConfusionMatrix) -> None:
        self.matrix += other.matrix
        self.missed += other.missed

    def iou(self, *, base: Sequence[int] = (), novel: Sequence[int] = (),
            convention: str = "xmask3d", names: Sequence[str] | None = None) -> IoUResult:
        return iou_from_confusion(self.matrix, missed=self.missed, valid=self.valid, base=base,
                                  novel=novel, convention=convention, names=names)


@dataclass(frozen=True)
class IoUResult:
    """Per-class IoU (NaN = skipped / not evaluated) and the means, all in [0, 1]."""

    iou: npt.NDArray[np.float64]  # (C,)
    intersection: npt.NDArray[np.int64]  # (C,)
    union: npt.NDArray[np.int64]  # (C,)
    gt_count: npt.NDArray[np.int64]  # (C,)
    evaluated: npt.NDArray[np.int64]  # indices that enter miou_all
    base: npt.NDArray[np.int64]
    novel: npt.NDArray[np.int64]
    convention: str
    names: tuple[str, ...]
    miou_all: float
    miou_base: float
    miou_novel: float
    hiou: float

    def as_dict(self) -> dict[str, Any]:
        def f(x: float) -> float | None:
            return None if np.isnan(x) else float(x)

        return {
            "convention": self.convention,
            "miou_all": f(self.miou_all), "miou_base": f(self.miou_base),
            "miou_novel": f(self.miou_novel), "hiou": f(self.hiou),
            "classes": [
                {"index": int(i), "name": self.names[i],
                 "split": "base" if i in set(self.base.tolist()) else "novel"
                 if i in set(self.novel.tolist()) else "all",
                 "iou": f(self.iou[i]), "intersection": int(self.intersection[i]),
                 "union": int(self.union[i]), "gt_points": int(self.gt_count[i])}
                for i in self.evaluated
            ],
        }


def _mean(iou: npt.NDArray[np.float64], idx: npt.NDArray[np.int64]) -> float:
    if idx.size == 0:
        return float("nan")
    vals = iou[idx]
    vals = vals[~np.isnan(vals)]
    return float(vals.mean()) if vals.size else float("nan")


def iou_from_confusion(
    matrix: npt.ArrayLike,
    *,
    missed: npt.ArrayLike | None = None,
    valid: npt.ArrayLike | None = None,
    base: Sequence[int] = (),
    novel: Sequence[int] = (),
    convention: str = "xmask3d",
    names: Sequence[str] | None = None,
) -> IoUResult:
    """IoU per class from a (C, C) GT x prediction matrix (see the module doc for conventions).

    ``base``/``novel`` index the classes of each mean; with both empty, every ``valid`` class
    is evaluated and only ``miou_all`` is defined. ``missed`` (C,) adds GT points predicted as
    no class (false negatives).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    m = np.asarray(matrix, dtype=np.int64)
    c = m.shape[0]
    if m.shape != (c, c):
        raise ValueError(f"confusion matrix must be square, got {m.shape}")
    b = np.asarray(sorted(base), dtype=np.int64)
    n = np.asarray(sorted(novel), dtype=np.int64)
    v = np.ones(c, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if b.size or n.size:
        evaluated = np.sort(np.concatenate([b, n]))
    else:
        evaluated = np.flatnonzero(v)
    # predictions only count on evaluated GT rows (ignored GT already dropped by update)
    sub = np.zeros_like(m)
    sub[evaluated] = m[evaluated]
    inter = np.diag(sub).copy()
    miss = np.zeros(c, dtype=np.int64) if missed is None else np.asarray(missed, dtype=np.int64)
    gt = sub.sum(axis=1) + miss
    pred = sub.sum(axis=0)
    union = gt + pred - inter
    iou = np.full(c, np.nan)
    iou[evaluated] = inter[evaluated] / (union[evaluated] + _EPS)
    if convention == "scannet":
        iou[evaluated[gt[evaluated] == 0]] = np.nan
    mb, mn = _mean(iou, b), _mean(iou, n)
    nm = tuple(names) if names is not None else tuple(str(i) for i in range(c))
    if len(nm) != c:
        raise ValueError(f"{len(nm)} names for {c} classes")
    return IoUResult(iou=iou, intersection=inter, union=union, gt_count=gt, evaluated=evaluated,
                     base=b, novel=n, convention=convention, names=nm,
                     miou_all=_mean(iou, evaluated), miou_base=mb, miou_novel=mn,
                     hiou=harmonic_iou(mb, mn) if b.size and n.size else float("nan"))
