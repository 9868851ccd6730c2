"""Integer-coordinate helpers shared by the backends: packing (batch, x, y, z) into int64 keys.

A key is a mixed-radix number over a bounding box, so it is exact (no hashing collisions) and
``key(c + d) == key(c) + key(d)`` for any shift that stays inside the box: a whole kernel offset
becomes one scalar added to a sorted key array, and neighbour search is ``torch.searchsorted``.
"""

from __future__ import annotations

import torch

__all__ = ["KeyRadix", "kernel_offsets", "unique_coordinates"]

_MAX_KEY = 1 << 62


class KeyRadix:
    """Mixed radix over the box ``lo <= (x, y, z) <= hi`` and batches ``0 .. n_batch-1``."""

    __slots__ = ("lo", "mult", "size")

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor, n_batch: int) -> None:
        """``lo``/``hi``: (3,) int64 inclusive bounds of every coordinate that will be keyed."""
        ext = [int(v) for v in (hi - lo + 1).tolist()]
        if int(n_batch) * ext[0] * ext[1] * ext[2] >= _MAX_KEY:
            raise ValueError(
                f"coordinate range {ext} x {n_batch} batches does not fit int64 keys; "
                "are the voxel coordinates in voxels (not millimetres)?"
            )
        self.lo = torch.cat([lo.new_zeros(1), lo]).to(torch.int64)  # (4,) batch lo = 0
        mult = [ext[0] * ext[1] * ext[2], ext[1] * ext[2], ext[2], 1]
        self.mult = torch.tensor(mult, dtype=torch.int64, device=lo.device)
        self.size = int(n_batch) * mult[0]  # number of distinct keys in the box

    @classmethod
    def covering(cls, *coords: torch.Tensor, margin: torch.Tensor | None = None) -> KeyRadix:
        """The radix of the smallest box around all (N_i, 4) ``coords``.

        ``margin`` (2, 3): per-axis (min, max) shift that queries may add (kernel offsets).
        """
        lo = torch.stack([c[:, 1:].amin(0) for c in coords]).amin(0).to(torch.int64)
        hi = torch.stack([c[:, 1:].amax(0) for c in coords]).amax(0).to(torch.int64)
        if margin is not None:
            lo = lo + margin[0].clamp(max=0)
            hi = hi + margin[1].clamp(min=0)
        n_batch = int(max(int(c[:, 0].max()) for c in coords)) + 1
        return cls(lo, hi, n_batch)

    def keys(self, coords: torch.Tensor) -> torch.Tensor:
        """(N,) int64 keys of (N, 4) coordinates (must lie inside the box)."""
        return ((coords.to(torch.int64) - self.lo) * self.mult).sum(1)

    def shift_keys(self, deltas: torch.Tensor) -> torch.Tensor:
        """(V,) key increments of (V, 3) spatial shifts."""
        return (deltas.to(torch.int64) * self.mult[1:]).sum(1)

    def decode(self, keys: torch.Tensor) -> torch.Tensor:
        """(N, 4) int32 coordinates of (N,) keys."""
        out = []
        rest = keys
        for m in self.mult.tolist():
            out.append(torch.div(rest, m, rounding_mode="floor"))
            rest = rest - out[-1] * m
        return (torch.stack(out, 1) + self.lo).to(torch.int32)


def kernel_offsets(kernel_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(K^3, 3) int64 offsets in units of the tensor stride, in MinkowskiEngine's order.

    Index ``i_x + K*i_y + K^2*i_z``; per axis ``i - K//2`` (odd K) or ``i`` (even K), as ME's
    ``kernel_region::coordinate_at`` for a hyper-cube region.
    """
    k = int(kernel_size)
    r = torch.arange(k, dtype=torch.int64, device=device) - (k // 2 if k % 2 else 0)
    gz, gy, gx = torch.meshgrid(r, r, r, indexing="ij")  # x varies fastest when flattened
    return torch.stack([gx.reshape(-1), gy.reshape(-1), gz.reshape(-1)], dim=1)


def unique_coordinates(coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique rows of (N, 4) integer coordinates, sorted by key, and the (N,) inverse map."""
    if coords.shape[0] == 0:
        empty = coords.new_zeros((0,), dtype=torch.int64)
        return coords.new_zeros((0, 4), dtype=torch.int32), empty
    radix = KeyRadix.covering(coords)
    uniq, inverse = torch.unique(radix.keys(coords), sorted=True, return_inverse=True)
    return radix.decode(uniq), inverse
