"""Coordinate sets and kernel maps of the pure-PyTorch backend (ME's coordinate manager).

A :class:`CoordSet` is one coordinate set at one tensor stride. Layers that keep coordinates
(stride-1 conv, BN, ReLU, cat, add) share it, so its kernel maps are built once and reused by
every layer of a residual stage, and strided sets remember their parent for the way back up.

A :class:`KernelMap` lists, per kernel offset k, the pairs (input row, output row) with
``in_coord == out_coord + offset_k`` (MinkowskiEngine's in/out maps). Neighbours are found on
int64 keys (``coords.py``), vectorised over all offsets: through a direct key -> row table when
the coordinate box is small, else ``torch.searchsorted`` on the sorted keys.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from xmask3d_ros.model.sparse.coords import KeyRadix, kernel_offsets, unique_coordinates

__all__ = ["CoordSet", "KernelMap", "search_map"]

# Queries per lookup call; bounds the temporary (V, N) key arrays (~32 MB each).
_QUERY_CHUNK = 1 << 22
# A direct key -> row table (int32) is used when the coordinate box has at most this many
# cells (64 MB), and at most _TABLE_CELLS_PER_ROW per input row; else sorted keys + search.
_TABLE_MAX_CELLS = 1 << 24
_TABLE_CELLS_PER_ROW = 64


class KernelMap:
    """Per kernel offset k, input and output row indices; ``None`` means the identity map."""

    __slots__ = ("n_out", "pairs")

    def __init__(
        self, pairs: list[tuple[int, torch.Tensor | None, torch.Tensor | None]], n_out: int
    ) -> None:
        self.pairs = pairs  # non-empty offsets only: (k, in_idx (M,), out_idx (M,))
        self.n_out = n_out

    def swapped(self, n_out: int) -> KernelMap:
        """The map with inputs and outputs exchanged (a transposed conv's map)."""
        return KernelMap([(k, o, i) for k, i, o in self.pairs], n_out)


class _KeyIndex:
    """Row lookup by key: a direct table when the box is small, else binary search."""

    def __init__(self, keys: torch.Tensor, radix: KeyRadix) -> None:
        n = keys.shape[0]
        self.table: torch.Tensor | None = None
        if radix.size <= min(_TABLE_MAX_CELLS, _TABLE_CELLS_PER_ROW * n + (1 << 20)):
            self.table = torch.full((radix.size,), -1, dtype=torch.int32, device=keys.device)
            self.table[keys] = torch.arange(n, dtype=torch.int32, device=keys.device)
        else:
            self.sorted_keys, self.perm = torch.sort(keys)

    def find(self, query: torch.Tensor) -> torch.Tensor:
        """Rows of ``query`` keys (any shape), -1 where absent (keys must lie in the box)."""
        if self.table is not None:
            return self.table[query]
        pos = torch.searchsorted(self.sorted_keys, query).clamp_(max=self.sorted_keys.shape[0] - 1)
        return torch.where(self.sorted_keys[pos] == query, self.perm[pos], -1)


def search_map(
    in_coords: torch.Tensor, out_coords: torch.Tensor, deltas: torch.Tensor, same_set: bool
) -> KernelMap:
    """Pairs (i, o, k) with ``in[i] == out[o] + deltas[k]``; (N, 4) coords, (V, 3) deltas.

    For a stride-1 conv (``same_set``) with a point-symmetric kernel (odd K), offset
    ``V-1-k`` is ``-offset_k``, whose pairs are offset k's swapped: only half is searched.
    """
    n_out, n_off = out_coords.shape[0], deltas.shape[0]
    symmetric = same_set and bool((deltas + deltas.flip(0) == 0).all())
    margin = torch.stack([deltas.amin(0), deltas.amax(0)])
    radix = KeyRadix.covering(in_coords, out_coords, margin=margin)
    index = _KeyIndex(radix.keys(in_coords), radix)
    out_keys = radix.keys(out_coords)
    shift = radix.shift_keys(deltas)
    n_search = n_off // 2 if symmetric else n_off
    found: dict[int, tuple[torch.Tensor | None, torch.Tensor | None]] = {}
    step = max(1, _QUERY_CHUNK // max(n_out, 1))
    for start in range(0, n_search, step):
        stop = min(start + step, n_search)
        rows = index.find(out_keys[None, :] + shift[start:stop, None])  # (v, N_out)
        hit = rows >= 0
        counts = hit.sum(1).tolist()
        out_idx = hit.nonzero()[:, 1]  # row-major: grouped by offset
        in_idx = rows[hit].to(torch.int64)
        pieces = zip(torch.split(in_idx, counts), torch.split(out_idx, counts), strict=True)
        for j, (i_k, o_k) in enumerate(pieces):
            if counts[j]:
                found[start + j] = (i_k, o_k)
    if symmetric:
        found[n_off // 2] = (None, None)  # the centre: x @ W[k], no gather or scatter
        for k in range(n_off // 2):
            if k in found:
                i, o = found[k]
                found[n_off - 1 - k] = (o, i)
    elif same_set:
        for k in range(n_off):
            if k in found and not bool(deltas[k].any()):
                found[k] = (None, None)
    return KernelMap([(k, *found[k]) for k in sorted(found)], n_out)


class CoordSet:
    """One coordinate set (N, 4) int32 at tensor stride ``stride``, with its cached maps."""

    __slots__ = ("__weakref__", "_down", "_maps", "_parent", "coords", "stride")

    def __init__(self, coords: torch.Tensor, stride: int, parent: CoordSet | None = None) -> None:
        self.coords = coords
        self.stride = int(stride)
        self._maps: dict[tuple[Any, ...], KernelMap] = {}
        self._down: dict[int, tuple[CoordSet, torch.Tensor]] = {}
        self._parent = weakref.ref(parent) if parent is not None else None

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def parent(self) -> CoordSet | None:
        """The finer set this one was strided from (target of a default transposed conv)."""
        return self._parent() if self._parent is not None else None

    def downsample(self, stride: int) -> tuple[CoordSet, torch.Tensor]:
        """Coordinates ``floor(c / (t*s)) * (t*s)`` (unique) and the (N,) row -> child map."""
        if stride not in self._down:
            ts = self.stride * stride
            c = self.coords.to(torch.int64)
            c = torch.cat([c[:, :1], torch.div(c[:, 1:], ts, rounding_mode="floor") * ts], 1)
            uniq, inverse = unique_coordinates(c)
            self._down[stride] = (CoordSet(uniq, ts, parent=self), inverse)
        return self._down[stride]

    def conv_map(self, kernel_size: int, stride: int) -> KernelMap:
        """Kernel map of a conv reading this set (offsets scaled by this set's stride)."""
        key = ("conv", kernel_size, stride)
        if key not in self._maps:
            self._maps[key] = self._build_conv_map(kernel_size, stride)
        return self._maps[key]

    def _build_conv_map(self, kernel_size: int, stride: int) -> KernelMap:
        t = self.stride
        if stride == 1:
            deltas = kernel_offsets(kernel_size, self.coords.device) * t
            return search_map(self.coords, self.coords, deltas, same_set=True)
        child, inverse = self.downsample(stride)
        if kernel_size != stride:
            deltas = kernel_offsets(kernel_size, self.coords.device) * t
            return search_map(self.coords, child.coords, deltas, same_set=False)
        # kernel == stride (the UNet's 2x2x2 downsampling): every input row lands in exactly
        # one output cell, at offset (c - o) / t in {0..K-1}^3; no neighbour search needed.
        rel = (self.coords[:, 1:] - child.coords.index_select(0, inverse)[:, 1:]).to(torch.int64)
        rel = torch.div(rel, t, rounding_mode="floor")
        k_of_row = rel[:, 0] + kernel_size * (rel[:, 1] + kernel_size * rel[:, 2])
        order = torch.argsort(k_of_row, stable=True)
        counts = torch.bincount(k_of_row, minlength=kernel_size**3).tolist()
        in_rows = torch.split(order, counts)
        out_rows = torch.split(inverse.index_select(0, order), counts)
        pairs: list[tuple[int, torch.Tensor | None, torch.Tensor | None]] = [
            (k, i, o) for k, (i, o) in enumerate(zip(in_rows, out_rows, strict=True)) if counts[k]
        ]
        return KernelMap(pairs, len(child))

    def transposed_map(self, fine: CoordSet, kernel_size: int, stride: int) -> KernelMap:
        """Map of a transposed conv from this (coarse) set onto ``fine``'s coordinates."""
        if fine.stride * stride != self.stride:
            raise ValueError(
                f"transposed conv: target tensor stride {fine.stride} x stride {stride} != "
                f"input tensor stride {self.stride}"
            )
        key = ("tr", kernel_size, stride)
        is_parent = fine._down.get(stride, (None,))[0] is self
        if is_parent and key in self._maps:
            return self._maps[key]
        if is_parent and kernel_size == stride:
            kmap = fine.conv_map(kernel_size, stride).swapped(len(fine))  # ME swaps it too
        else:  # out f receives in c when f == c + off_k * t_fine
            deltas = -kernel_offsets(kernel_size, self.coords.device) * fine.stride
            kmap = search_map(self.coords, fine.coords, deltas, same_set=False)
        if is_parent:
            self._maps[key] = kmap
        return kmap

    def expanded(self, kernel_size: int, stride: int) -> CoordSet:
        """All coordinates a transposed conv can reach (ME's region expansion), stride t/s."""
        t_out = self.stride // stride
        deltas = kernel_offsets(kernel_size, self.coords.device) * t_out
        c = self.coords.to(torch.int64)
        reach = c[None, :, 1:] + deltas[:, None, :]  # (V, N, 3)
        batch = c[None, :, :1].expand(deltas.shape[0], -1, 1)
        uniq, _ = unique_coordinates(torch.cat([batch, reach], 2).reshape(-1, 4))
        return CoordSet(uniq, t_out)
