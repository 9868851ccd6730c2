"""Connected components of voxel sets (26-neighbourhood), vectorised, and per-component summaries.

Voxels are integer keys ``(N, 3)``; two voxels are connected when their keys differ by at most 1
on every axis (26-neighbourhood) and they belong to the same group (the query label). The
neighbour joins are found without a Python loop per voxel: keys become linear indices in the
padded bounding box, and each of the 13 "forward" offsets is looked up either in a dense index
grid (when the box is small: one gather per offset) or by ``np.searchsorted`` in the sorted
linear keys (large or sparse boxes). ``scipy.sparse.csgraph.connected_components`` then labels
the join graph in C.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components as _csgraph_components

__all__ = ["ComponentSummary", "connected_components", "summarize_components"]

# The 13 offsets (dx, dy, dz) > (0, 0, 0) in lexicographic order: half of the 26-neighbourhood,
# every undirected join is found exactly once.
_FORWARD = np.array(
    [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1) if (dx, dy, dz) > (0, 0, 0)],
    dtype=np.int64,
)
# A dense index grid (int32 per cell) is used when the padded box has at most
# max(_DENSE_MIN_CELLS, _DENSE_PER_VOXEL * N) and at most _DENSE_MAX_CELLS cells; larger or
# sparser boxes use sorted keys and np.searchsorted (about 3x slower). Grids up to
# _KEEP_CELLS are kept per thread between calls (only the touched cells are reset), so a
# query does not pay page faults for a fresh grid (a local map at 5 cm: ~6 M cells, 24 MB).
_DENSE_MIN_CELLS = 1 << 22
_DENSE_PER_VOXEL = 256
_DENSE_MAX_CELLS = 1 << 26
_KEEP_CELLS = 1 << 24
_scratch = threading.local()


def _grid(cells: int) -> tuple[npt.NDArray[np.int32], bool]:
    """An all -1 int32 array of at least ``cells`` entries, and whether it is the kept one."""
    g = getattr(_scratch, "grid", None)
    if g is not None and g.size >= cells:
        return g, True
    if cells > _KEEP_CELLS:
        return np.full(cells, -1, dtype=np.int32), False
    _scratch.grid = np.full(max(cells, int(1.5 * (g.size if g is not None else 0))), -1, np.int32)
    return _scratch.grid, True


def _compress_axis(v: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Coordinates -> small non-negative ones with the same adjacency (gaps >= 2 become 2)."""
    u, inv = np.unique(v, return_inverse=True)
    step = np.minimum(np.diff(u), 2)
    return np.concatenate([[0], np.cumsum(step)])[inv]


def _linear(keys: npt.NDArray[np.int64], groups: npt.NDArray[np.int64] | None
            ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int]:
    """Linear indices in the box padded by one cell per axis (so +-1 steps never wrap onto a
    voxel), the 13 forward offsets in that layout (all > 0), and the number of cells.

    With ``groups`` the groups are stacked along a 4th axis (the pad slab keeps them apart).
    """
    k = keys - keys.min(axis=0)
    ext = k.max(axis=0) + 2
    g_ext = int(groups.max()) + 1 if groups is not None else 1
    if float(np.prod(ext.astype(np.float64))) * g_ext >= 2.0**62:
        k = np.stack([_compress_axis(k[:, i]) for i in range(3)], axis=1)
        ext = k.max(axis=0) + 2
    sx, sy = ext[1] * ext[2], ext[2]
    lin = k[:, 0] * sx + k[:, 1] * sy + k[:, 2]
    cells = int(np.prod(ext))
    if groups is not None:
        lin = lin + groups * cells
        cells *= g_ext
    offsets = _FORWARD[:, 0] * sx + _FORWARD[:, 1] * sy + _FORWARD[:, 2]
    return lin, offsets, cells


def _joins(lin: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64], cells: int
           ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], bool]:
    """(src, dst) voxel pairs whose linear indices differ by one of ``offsets``, and whether
    every linear index was distinct (else the joins of repeated cells are incomplete)."""
    n = lin.shape[0]
    src, dst = [], []
    # Visit voxels in linear order: the neighbour lookups then walk memory nearly sequentially
    # (map rows are in insertion order: random lookups cost ~10x more).
    order = np.argsort(lin)
    sl = lin[order]
    distinct = bool(np.all(sl[1:] != sl[:-1]))
    if cells <= max(_DENSE_MIN_CELLS, _DENSE_PER_VOXEL * n) and cells <= _DENSE_MAX_CELLS:
        grid, kept = _grid(cells)
        grid[sl] = np.arange(n, dtype=np.int32)
        try:
            for off in offsets:
                nb = grid[sl + off]  # offsets > 0 and the top pad keep sl + off < cells
                hit = np.flatnonzero(nb >= 0)
                src.append(hit)
                dst.append(nb[hit])
        finally:
            if kept:
                grid[sl] = -1
    else:
        for off in offsets:
            q = sl + off  # sorted needles
            pos = np.searchsorted(sl, q)
            np.minimum(pos, n - 1, out=pos)
            hit = np.flatnonzero(sl[pos] == q)
            src.append(hit)
            dst.append(pos[hit])
    # Positions in sorted order -> voxel indices.
    s_all = order[np.concatenate(src)]
    d_all = order[np.concatenate(dst)]
    return s_all, d_all, distinct


def connected_components(
    keys: npt.ArrayLike, groups: npt.ArrayLike | None = None
) -> tuple[npt.NDArray[np.int64], int]:
    """Label the 26-connected components of a voxel set.

    ``keys`` (N, 3) integer voxel coordinates; ``groups`` (N,) ints >= 0 (voxels of different
    groups are never joined) or None. Keys must be distinct within a group; the same key may
    appear in several groups (highlight mode: a voxel scoring high for two labels). Returns (N,)
    int64 component ids in ``[0, n_components)`` and ``n_components``.
    """
    k = np.asarray(keys)
    if k.ndim != 2 or k.shape[1] != 3 or (k.size and k.dtype.kind not in "iu"):
        raise ValueError(f"keys must be an (N, 3) integer array, got shape {k.shape}, dtype {k.dtype}")
    n = k.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.int64), 0
    k = k.astype(np.int64)
    g = None
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != (n,) or (g.dtype.kind not in "iu") or g.min() < 0:
            raise ValueError(f"groups must be ({n},) integers >= 0, got shape {g.shape}, dtype {g.dtype}")
        g = g.astype(np.int64)
    lin, offsets, cells = _linear(k, None)
    src, dst, distinct = _joins(lin, offsets, cells)
    if not distinct:
        if g is None:
            raise ValueError("keys must be distinct (or told apart by groups)")
        _, g_dense = np.unique(g, return_inverse=True)  # keep the 4th axis short
        lin, offsets, cells = _linear(k, g_dense.astype(np.int64))
        src, dst, distinct = _joins(lin, offsets, cells)
        if not distinct:
            raise ValueError("keys must be distinct within each group")
    elif g is not None:
        same = g[src] == g[dst]
        src, dst = src[same], dst[same]
    graph = sp.csr_matrix((np.ones(src.shape[0], dtype=np.int8), (src, dst)), shape=(n, n))
    n_comp, labels = _csgraph_components(graph, directed=True, connection="weak")
    return labels.astype(np.int64), int(n_comp)


@dataclasses.dataclass(frozen=True, eq=False)
class ComponentSummary:
    """Per component (one row each): size, mean score, centroid and key box."""

    num_voxels: npt.NDArray[np.int64]  # (C,)
    score: npt.NDArray[np.float64]  # (C,) mean of the voxel scores
    centroid: npt.NDArray[np.float64]  # (C, 3) mean of the voxel positions
    key_min: npt.NDArray[np.int64]  # (C, 3) smallest voxel key per axis
    key_max: npt.NDArray[np.int64]  # (C, 3) largest voxel key per axis
    group: npt.NDArray[np.int64]  # (C,) the group (label) of the component


def summarize_components(
    comp: npt.NDArray[np.int64],
    n_comp: int,
    keys: npt.NDArray[np.integer],
    positions: npt.NDArray[np.floating],
    scores: npt.NDArray[np.floating],
    groups: npt.NDArray[np.integer] | None = None,
) -> ComponentSummary:
    """Sizes, mean scores, centroids and key boxes of the components from :func:`connected_components`."""
    cnt = np.bincount(comp, minlength=n_comp)
    safe = np.maximum(cnt, 1)
    score = np.bincount(comp, weights=scores, minlength=n_comp) / safe
    centroid = np.stack(
        [np.bincount(comp, weights=positions[:, i], minlength=n_comp) / safe for i in range(3)], axis=1
    )
    # Group voxels by component with a stable (radix for small ints) sort, then reduce runs.
    small = comp.astype(np.uint16) if n_comp <= 65535 else comp
    order = np.argsort(small, kind="stable")
    starts = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    ks = np.asarray(keys, dtype=np.int64)[order]
    key_min = np.minimum.reduceat(ks, starts, axis=0) if comp.size else np.empty((0, 3), np.int64)
    key_max = np.maximum.reduceat(ks, starts, axis=0) if comp.size else np.empty((0, 3), np.int64)
    grp = (np.asarray(groups, dtype=np.int64)[order[starts]] if groups is not None
           else np.zeros(n_comp, dtype=np.int64))
    return ComponentSummary(cnt.astype(np.int64), score, centroid, key_min, key_max, grp)
