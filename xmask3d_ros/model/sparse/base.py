"""The sparse-tensor interface the 3D UNets are written against (one implementation per backend).

A sparse tensor is a set of integer voxel coordinates ``C`` (N, 4) = (batch, x, y, z), features
``F`` (N, C) and a tensor stride ``t`` (coordinates are multiples of ``t``). Semantics follow
MinkowskiEngine 0.5.4 exactly, so that one checkpoint runs on either backend:

* kernel offsets: index ``k = i_x + K*i_y + K^2*i_z`` (x fastest); along each axis the offset is
  ``(i - K//2) * t`` for odd ``K`` and ``i * t`` (0 .. K-1, non-negative) for even ``K``;
* conv: ``out[u] = sum_k in[u + off_k] @ W[k]`` with ``W`` of shape (K^3, C_in, C_out), or
  (C_in, C_out) for a 1x1x1 stride-1 kernel; offsets scale with the *input* tensor stride;
* stride-s conv on stride t: output coordinates ``floor(c / (t*s)) * (t*s)``, deduplicated (the
  kernel never creates coordinates);
* transposed conv (stride s, input stride t, output stride t/s) onto the coordinates of a finer
  tensor ``like`` (the UNet's skip tensor): ``out[c + off_k] += in[c] @ W[k]`` with offsets
  scaled by the *output* stride, evaluated only at ``like``'s coordinates.

Read from ME's ``src/kernel_region.hpp`` (``coordinate_at``) and
``src/coordinate_map_manager.cpp`` (``kernel_map``; a transposed map is the swapped map of the
regular conv from the fine set); checked against the built ME in test_sparse_minkowski.py.
"""

from __future__ import annotations

import abc
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from xmask3d_ros.model.sparse.coords import unique_coordinates

__all__ = [
    "BACKEND_CONFIG_KEY",
    "BackendUnavailableError",
    "SparseBackend",
    "SparseTensorLike",
    "global_max_pool_features",
    "voxelize_coordinates",
]

# The configuration key that selects a backend, named in every backend error.
BACKEND_CONFIG_KEY = "model.backbone3d.backend"


class BackendUnavailableError(ImportError):
    """A sparse backend was requested whose library is not installed."""


@runtime_checkable
class SparseTensorLike(Protocol):
    """What both backends' tensors offer (MinkowskiEngine's ``SparseTensor`` already does)."""

    @property
    def F(self) -> torch.Tensor:
        """(N, C) features."""

    @property
    def C(self) -> torch.Tensor:
        """(N, 4) int32 coordinates (batch, x, y, z)."""


class SparseBackend(abc.ABC):
    """Factory for sparse layers plus the few functional ops a UNet needs.

    Layers are ``nn.Module`` s whose parameters use MinkowskiEngine's names and shapes
    (``kernel``, ``bias`` (1, C_out), BatchNorm as ``bn.*``), so state dicts match 1:1.
    """

    name: str = ""

    # -- tensors ---------------------------------------------------------------------------
    @abc.abstractmethod
    def make_tensor(self, coords: torch.Tensor, feats: torch.Tensor, tensor_stride: int = 1) -> Any:
        """Wrap unique (N, 4) integer coordinates and (N, C) features (rows kept in order)."""

    @abc.abstractmethod
    def tensor_stride(self, x: Any) -> int:
        """The (isotropic) tensor stride of ``x``."""

    @abc.abstractmethod
    def replace_features(self, x: Any, feats: torch.Tensor) -> Any:
        """A tensor on ``x``'s coordinates with new (N, C') features."""

    # -- layers ----------------------------------------------------------------------------
    @abc.abstractmethod
    def conv(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        bias: bool = False,
    ) -> nn.Module:
        """Sparse conv (dilation 1); ``forward(x) -> y``."""

    @abc.abstractmethod
    def conv_transpose(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 2,
        stride: int = 2,
        *,
        bias: bool = False,
    ) -> nn.Module:
        """Transposed sparse conv; ``forward(x, like) -> y`` on ``like``'s coordinates."""

    @abc.abstractmethod
    def batch_norm(self, channels: int, momentum: float = 0.1) -> nn.Module:
        """BatchNorm1d over the features (submodule ``bn``, as ME)."""

    @abc.abstractmethod
    def relu(self) -> nn.Module:
        """Feature-wise ReLU."""

    # -- functional ops --------------------------------------------------------------------
    @abc.abstractmethod
    def cat(self, *tensors: Any) -> Any:
        """Concatenate features of tensors that share one coordinate set (skip connections)."""

    @abc.abstractmethod
    def add(self, a: Any, b: Any) -> Any:
        """Feature sum of two tensors on the same coordinate set (residuals)."""

    def global_max_pool(self, x: Any) -> torch.Tensor:
        """(B, C) per-sample max over all voxels; B = max batch index + 1."""
        return global_max_pool_features(x.F, x.C[:, 0])

    def voxelize(
        self,
        points: torch.Tensor,
        feats: torch.Tensor,
        voxel_size_m: float,
        batch: torch.Tensor | None = None,
        reduce: str = "first",
    ) -> tuple[Any, torch.Tensor]:
        """Points -> unique voxels, plus the (N,) inverse map point -> voxel row.

        ``points`` (N, 3) metres, ``feats`` (N, C), ``batch`` (N,) sample index (default 0).
        ``reduce``: "first" takes the feature of the lowest-index point of each voxel (the
        reference keeps one representative point per voxel), "mean" averages.
        """
        coords, inverse, first = voxelize_coordinates(points, voxel_size_m, batch)
        if reduce == "first":
            vfeats = feats.index_select(0, first)
        elif reduce == "mean":
            n = coords.shape[0]
            vfeats = feats.new_zeros(n, feats.shape[1]).index_add_(0, inverse, feats)
            count = torch.bincount(inverse, minlength=n).clamp_(min=1).to(feats.dtype)
            vfeats = vfeats / count[:, None]
        else:
            raise ValueError(f"reduce: {reduce!r} is not one of 'first', 'mean'")
        return self.make_tensor(coords, vfeats), inverse

    def devoxelize(self, x: Any, inverse: torch.Tensor) -> torch.Tensor:
        """(N_points, C) features of each point's voxel (``inverse`` from :meth:`voxelize`)."""
        feats: torch.Tensor = x.F.index_select(0, inverse)
        return feats


def voxelize_coordinates(
    points: torch.Tensor, voxel_size_m: float, batch: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantise points to voxels: ``floor(p / voxel_size)`` as in the reference voxelizer.

    Returns unique (M, 4) int32 coordinates (sorted by batch, x, y, z), the (N,) int64 inverse
    map and the (M,) index of the first point of each voxel.
    """
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points: expected shape (N, 3), got {tuple(points.shape)}")
    if not voxel_size_m > 0:
        raise ValueError(f"voxel_size_m: {voxel_size_m} is out of range, expected > 0")
    n = points.shape[0]
    grid = torch.floor(points / voxel_size_m).to(torch.int64)  # (N, 3)
    if batch is None:
        batch = torch.zeros(n, dtype=torch.int64, device=points.device)
    full = torch.cat([batch.to(torch.int64)[:, None], grid], dim=1)  # (N, 4)
    uniq, inverse = unique_coordinates(full)
    order = torch.arange(n, device=points.device)
    first = torch.full((uniq.shape[0],), n, dtype=torch.int64, device=points.device)
    first = first.scatter_reduce(0, inverse, order, reduce="amin", include_self=True)
    return uniq, inverse, first


def global_max_pool_features(feats: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """(B, C) max of ``feats`` (N, C) per ``batch`` index; samples with no rows give 0."""
    batch = batch.to(torch.int64)
    n_batch = int(batch.max().item()) + 1 if batch.numel() else 0
    out = feats.new_zeros(n_batch, feats.shape[1])
    index = batch[:, None].expand_as(feats)
    pooled: torch.Tensor = out.scatter_reduce(0, index, feats, reduce="amax", include_self=False)
    return pooled
