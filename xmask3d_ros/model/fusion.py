"""Fusion of 2D mask features with 3D point features (reference-notes §1.9, ``FeatureMerger``).

One ``Linear(2E -> E)`` (with bias, no normalisation or activation) on the concatenation
``[2D mask feature, 3D point feature]`` for points covered by a mask; uncovered points keep their
pure 3D feature unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FeatureFusion"]


class FeatureFusion(nn.Module):
    """``fused = Linear([f2d, f3d])`` where covered, ``f3d`` elsewhere. Width ``E`` both sides."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        if embed_dim <= 0:
            raise ValueError(f"embed_dim must be > 0, got {embed_dim}")
        self.embed_dim = int(embed_dim)
        self.linear = nn.Linear(2 * self.embed_dim, self.embed_dim)

    def forward(self, feat_2d: Tensor, feat_3d: Tensor, covered: Tensor) -> Tensor:
        """(N, E) mask features, (N, E) point features, (N,) bool -> (N, E) fused features.

        The linear layer only runs on covered points (N x 2E x E FLOPs saved elsewhere).
        """
        if feat_2d.shape != feat_3d.shape or feat_3d.shape[-1] != self.embed_dim:
            raise ValueError(
                f"expected two (N, {self.embed_dim}) tensors, got {tuple(feat_2d.shape)} and "
                f"{tuple(feat_3d.shape)}"
            )
        if covered.shape != feat_3d.shape[:1]:
            raise ValueError(f"covered must be ({feat_3d.shape[0]},), got {tuple(covered.shape)}")
        idx = covered.nonzero(as_tuple=True)[0]
        if idx.numel() == 0:
            return feat_3d
        fused = self.linear(torch.cat([feat_2d[idx], feat_3d[idx]], dim=-1))
        return feat_3d.index_put((idx,), fused.to(feat_3d.dtype))
