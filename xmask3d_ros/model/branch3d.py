"""The 3D branch of XMask3D (reference-notes §1.1 and §1.10, ``PC_Processor`` and
``PC_Binary_Processor``).

    points (N, 3) m, colours (N, 3) in [-1, 1], view index (N,)
      --voxelise at backbone3d.voxel_size_m ("first" point per voxel, as the reference's
        sparse_quantize)--> sparse tensor (M voxels, RGB features)
      --net3d (MinkUNet34C)--> bottleneck (stride 16, planes[3]) and output (stride 1, 256)
      output --decoder Linear(256 -> E)--> per voxel --inverse map--> pure-3D feature per point
      bottleneck --point2text_adapter Linear(planes[3] -> E)--> max over each view's bottleneck
        voxels --> global prefix (B, E), the implicit caption of the 2D branch
      --binary_net (MinkUNet18A) -> BatchNorm1d -> ReLU -> Linear(256 -> 1)--> base/novel logit
        per voxel --inverse map--> per point

The binary network shares no weights with the semantic one. When both use the same voxel size
and backend they share the voxelisation and the sparse coordinate set (so the pure-PyTorch
backend builds the stride-1 kernel maps once for both networks).

Deviation: the reference voxeliser applies a random rotation and scale at train *and* test time
(reference-notes §1.1, an OpenScene quirk); here the model voxelises what it is given, so
inference is deterministic. Training augmentation belongs to the data pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.model.minkunet import MinkUNet, build_backbone3d
from xmask3d_ros.model.sparse.base import global_max_pool_features

__all__ = ["Branch3D", "Branch3DOutput", "colors_to_features"]


def colors_to_features(colors: Tensor) -> Tensor:
    """RGB colours -> network input in [-1, 1] (reference ``input_color``: c / 127.5 - 1).

    uint8 (0..255) or float in [0, 1]; returns float32 (N, 3).
    """
    if colors.ndim != 2 or colors.shape[1] != 3:
        raise ValueError(f"colors must be (N, 3), got {tuple(colors.shape)}")
    if colors.dtype == torch.uint8:
        return colors.float() / 127.5 - 1.0
    return colors.float() * 2.0 - 1.0


@dataclass(frozen=True)
class Branch3DOutput:
    """Per-point and per-view outputs of the 3D branch (points in input order)."""

    feat_3d: Tensor  # (N, E) pure-3D point features (decoder output, CLIP space, unnormalised)
    prefix: Tensor  # (B, E) max-pooled adapted bottleneck per view (captioner input)
    binary_logits: Tensor | None  # (N,) base-vs-novel logit per point; None without the head
    voxel_index: Tensor  # (N,) int64 row of each point's voxel (semantic network)
    num_voxels: int  # M, voxels of the semantic network's input


class Branch3D(nn.Module):
    """``forward(points, features, batch, num_views) -> Branch3DOutput`` (see module doc)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        b3, bb = cfg.backbone3d, cfg.binary3d
        embed = cfg.clip.embed_dim
        if b3.in_channels != 3 or (cfg.binary.enabled and bb.in_channels != 3):
            raise ValueError(
                f"backbone3d.in_channels: {b3.in_channels} / binary3d.in_channels: "
                f"{bb.in_channels}; the 3D branch feeds RGB, so both must be 3"
            )
        self.voxel_size_m = float(b3.voxel_size_m)
        self.net3d: MinkUNet = build_backbone3d(b3)
        self.decoder = nn.Linear(b3.out_channels, embed)
        self.point2text_adapter = nn.Linear(b3.planes[3], embed)  # bottleneck width (256)
        self.binary_net: MinkUNet | None = None
        self.binary_head: nn.Sequential | None = None
        self.binary_voxel_size_m = float(bb.voxel_size_m)
        if cfg.binary.enabled:
            self.binary_net = build_backbone3d(bb)
            self.binary_head = nn.Sequential(
                nn.BatchNorm1d(bb.out_channels), nn.ReLU(), nn.Linear(bb.out_channels, 1)
            )

    def _shares_input(self) -> bool:
        assert self.binary_net is not None
        return (
            self.binary_voxel_size_m == self.voxel_size_m
            and self.binary_net.backend.name == self.net3d.backend.name
        )

    def forward(
        self,
        points: Tensor,
        features: Tensor,
        batch: Tensor | None = None,
        num_views: int | None = None,
    ) -> Branch3DOutput:
        """``points`` (N, 3) metres (any frame), ``features`` (N, 3) RGB in [-1, 1],
        ``batch`` (N,) int64 view index in [0, num_views) (default: one view).

        Every view must have at least one point (its prefix is a max over its voxels).
        """
        if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
            raise ValueError(f"points must be (N, 3) with N > 0, got {tuple(points.shape)}")
        if features.shape != points.shape:
            raise ValueError(
                f"features must be (N, 3) like points {tuple(points.shape)}, got "
                f"{tuple(features.shape)}"
            )
        if batch is None:
            batch = torch.zeros(points.shape[0], dtype=torch.int64, device=points.device)
        batch = batch.to(device=points.device, dtype=torch.int64)
        if num_views is None:
            num_views = int(batch.max().item()) + 1
        counts = torch.bincount(batch, minlength=num_views)
        if counts.shape[0] != num_views or bool((counts == 0).any()):
            raise ValueError(
                f"every view needs >= 1 point: points per view {counts.tolist()} for "
                f"num_views={num_views}"
            )
        dtype = self.decoder.weight.dtype
        pts = points.float()  # voxel coordinates in float32 whatever the model dtype
        feats = features.to(dtype)
        backend = self.net3d.backend
        x, inverse = backend.voxelize(pts, feats, self.voxel_size_m, batch)
        bottleneck, out = self.net3d(x)
        feat_3d = self.decoder(out.F).index_select(0, inverse)  # per voxel, then to points
        adapted = self.point2text_adapter(bottleneck.F)
        prefix = global_max_pool_features(adapted, bottleneck.C[:, 0])
        binary_logits = None
        if self.binary_net is not None and self.binary_head is not None:
            if self._shares_input():
                xb, inv_b = x, inverse
            else:
                xb, inv_b = self.binary_net.backend.voxelize(
                    pts, feats, self.binary_voxel_size_m, batch
                )
            _, out_b = self.binary_net(xb)
            voxel_logit = self.binary_head(out_b.F)[:, 0]  # BN over voxels, as the reference
            binary_logits = voxel_logit.index_select(0, inv_b)
        return Branch3DOutput(
            feat_3d=feat_3d,
            prefix=prefix,
            binary_logits=binary_logits,
            voxel_index=inverse,
            num_voxels=int(out.F.shape[0]),
        )
