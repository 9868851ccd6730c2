"""Per-voxel semantic state: running weighted mean of L2-normalised features, fp16 storage.

The conversions float16 <-> float32 dominate the cost (numpy converts in software, ~3 ns per
element each way here), so an update touches each stored element exactly twice and works in
chunks of 2048 rows to keep its float32 temporaries in cache.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["fold_features", "row_norms", "update_features", "update_mean"]


def update_features(
    features: npt.NDArray[np.float16],
    weights: npt.NDArray[np.float32],
    idx: npt.NDArray[np.intp],
    f: npt.NDArray[np.float32],
    w: npt.NDArray[np.float32],
) -> None:
    """Fold observations ``f`` (M, D) with weights ``w`` (M,) >= 0 into rows ``idx`` (M,).

    Each observation counts as its unit vector ``f / |f|`` with weight ``w`` (zero vectors are
    ignored); repeated rows are summed first. ValueError if a feature is not finite.
    """
    norms = row_norms(f)
    if not np.all(np.isfinite(norms)):
        raise ValueError("features contain non-finite values (or overflow float32)")
    w_eff = np.where(norms > 0, w, np.float32(0.0))  # zero vectors carry no direction
    scale = np.divide(w_eff, norms, out=np.zeros_like(w_eff), where=norms > 0)
    if np.all(idx[1:] > idx[:-1]):  # the usual case (visible() rows): unique and ascending
        fold_features(features, weights, idx, f, None, scale, w_eff)
        return
    order = np.argsort(idx, kind="stable")
    idx_s = idx[order]
    starts = np.flatnonzero(np.concatenate([[True], idx_s[1:] != idx_s[:-1]]))
    if starts.size == idx_s.size:  # unique rows in another order: no reduction
        fold_features(features, weights, idx_s, f, order, scale, w_eff)
    else:  # repeated rows: weighted sums of unit vectors per row first
        fsum = np.add.reduceat((f * scale[:, None])[order], starts, axis=0)
        wsum = np.add.reduceat(w_eff[order], starts)
        fold_features(features, weights, idx_s[starts], fsum, None, np.ones_like(wsum), wsum)


def fold_features(
    features: npt.NDArray[np.float16],
    weights: npt.NDArray[np.float32],
    rows: npt.NDArray[np.intp],
    f: npt.NDArray[np.float32],
    order: npt.NDArray[np.intp] | None,
    scale: npt.NDArray[np.float32],
    weight: npt.NDArray[np.float32],
) -> None:
    """In place: ``features[rows] <- (w_old * mean + scale * f) / (w_old + weight)`` and
    ``weights[rows] <- w_old + weight``, chunk by chunk (``features`` (N, D) float16 storage,
    ``weights`` (N,) float32 storage).

    ``rows`` are unique; row ``k`` of the update is ``f[order[k]]`` (or ``f[k]``), likewise for
    ``scale`` and ``weight``. Chunks of 2048 rows keep the float32 temporaries in cache (a
    50k x 768 update makes no 150 MB temporaries).
    """
    step = 2048
    for a in range(0, rows.size, step):
        sel: Any = order[a : a + step] if order is not None else slice(a, a + step)
        r = rows[a : a + step]
        wc = weight[sel]
        fc = f[sel]
        if not np.all(wc > 0):
            keep = wc > 0
            r, wc, fc, sc = r[keep], wc[keep], fc[keep], scale[sel][keep]
        else:
            sc = scale[sel]
        if r.size == 0:
            continue
        w_old = weights[r]
        w_new = w_old + wc
        mean = features[r].astype(np.float32)
        mean *= (w_old / w_new)[:, None]
        tmp = np.multiply(fc, (sc / w_new)[:, None])
        mean += tmp
        features[r] = mean
        weights[r] = w_new


def row_norms(f: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(M, D) -> (M,) float32 L2 norms (einsum: no (M, D) temporary)."""
    return np.sqrt(np.einsum("ij,ij->i", f, f))


def update_mean(
    mean: npt.NDArray[np.float32],
    weights: npt.NDArray[np.float32],
    idx: npt.NDArray[np.intp],
    values: npt.NDArray[np.float32],
    w: npt.NDArray[np.float32],
) -> None:
    """Fold scalar observations ``values`` (M,) with weights ``w`` (M,) >= 0 into the running
    weighted means ``mean[idx]`` (total weight ``weights[idx]``); repeated rows are summed first.
    ValueError if a value is not finite."""
    if not np.all(np.isfinite(values)):
        raise ValueError("values contain NaN or inf")
    if idx.size == 0:
        return
    if np.all(idx[1:] > idx[:-1]):
        rows, wsum, vsum = idx, w, w * values
    else:
        rows, inv = np.unique(idx, return_inverse=True)
        wsum = np.bincount(inv, weights=w, minlength=rows.size)
        vsum = np.bincount(inv, weights=w * values, minlength=rows.size)
    keep = wsum > 0
    rows, wsum, vsum = rows[keep], wsum[keep], vsum[keep]
    w_old = weights[rows].astype(np.float64)
    w_new = w_old + wsum
    mean[rows] = (mean[rows] * w_old + vsum) / w_new
    weights[rows] = w_new
