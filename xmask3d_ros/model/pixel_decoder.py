"""Mask2Former's MSDeformAttn pixel decoder (reference-notes §1.6), without detectron2.

Inputs are the four projected diffusion features ``s2..s5`` (strides 4, 8, 16, 32). The three
coarse ones go through a 6-layer deformable-attention encoder (8 heads, FFN 1024, conv_dim 256,
GroupNorm); FPN-style lateral/output convs bring the result to the common stride 4, where a 1x1
conv gives the per-pixel mask features (mask_dim 256). Module names follow Mask2Former
(``input_proj``, ``transformer.encoder.layers``, ``adapter_1``, ``layer_1``, ``mask_features``)
so reference checkpoints map by name.

Shared small layers used elsewhere in the 2D branch live here too: :func:`group_norm`,
:class:`ConvNorm` (detectron2's Conv2d with a norm), :class:`PositionEmbeddingSine`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from xmask3d_ros.model.msdeform_attn import MSDeformAttn

__all__ = [
    "ConvNorm",
    "MSDeformAttnEncoderLayer",
    "MSDeformAttnPixelDecoder",
    "MSDeformAttnTransformerEncoderOnly",
    "PositionEmbeddingSine",
    "group_norm",
]


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with detectron2's 32 groups, or fewer when ``channels`` is not a multiple (tiny).

    For every width of the paper configuration (multiples of 32) this is ``GroupNorm(32, c)``.
    """
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ConvNorm(nn.Conv2d):
    """detectron2 ``Conv2d``: convolution, optional ``norm`` module, optional activation.

    The norm is an attribute of the conv (state-dict keys ``<name>.weight``, ``<name>.norm.*``),
    as in detectron2 checkpoints.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        norm: nn.Module | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
        bias: bool = True,
        padding: int = 0,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def c2_xavier_fill(conv: nn.Conv2d) -> None:
    """fvcore's ``c2_xavier_fill``: Caffe2 XavierFill (kaiming_uniform a=1), zero bias."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.constant_(conv.bias, 0.0)


class PositionEmbeddingSine(nn.Module):
    """DETR's normalised sine position encoding (Mask2Former's ``PositionEmbeddingSine``).

    ``forward(x (B, C, H, W)) -> (B, 2 * num_pos_feats, H, W)``: y then x, each sin/cos
    interleaved, coordinates 1..H scaled to (0, 2 pi]. No padding masks: inputs are never padded.
    """

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = 2.0 * math.pi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        eps = 1e-6
        y_embed = torch.arange(1, h + 1, dtype=torch.float32, device=x.device)
        x_embed = torch.arange(1, w + 1, dtype=torch.float32, device=x.device)
        y_embed = (y_embed / (h + eps) * self.scale).view(1, h, 1).expand(b, h, w)
        x_embed = (x_embed / (w + eps) * self.scale).view(1, 1, w).expand(b, h, w)
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (
            2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats
        )
        pos_x = x_embed[..., None] / dim_t
        pos_y = y_embed[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).to(x.dtype)


class MSDeformAttnEncoderLayer(nn.Module):
    """Post-norm deformable self-attention + ReLU FFN (Deformable DETR encoder layer)."""

    def __init__(self, d_model: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
    ) -> torch.Tensor:
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, spatial_shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class _Encoder(nn.Module):
    def __init__(self, layer: MSDeformAttnEncoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """The encoder of Deformable DETR over L levels; returns the flattened memory (B, S, C)."""

    def __init__(
        self, d_model: int, n_heads: int, num_layers: int, d_ffn: int, n_levels: int, n_points: int
    ) -> None:
        super().__init__()
        layer = MSDeformAttnEncoderLayer(d_model, d_ffn, n_levels, n_heads, n_points)
        self.encoder = _Encoder(layer, num_layers)
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module.reset_parameters()
        nn.init.normal_(self.level_embed)

    @staticmethod
    def reference_points(
        spatial_shapes: Sequence[tuple[int, int]], device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """Pixel centres of every level, normalised: (1, S, L, 2) (x, y); no padding."""
        points = []
        for h, w in spatial_shapes:
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, h - 0.5, h, dtype=dtype, device=device) / h,
                torch.linspace(0.5, w - 0.5, w, dtype=dtype, device=device) / w,
                indexing="ij",
            )
            points.append(torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1))
        ref = torch.cat(points, 0)[None]  # (1, S, 2)
        return ref[:, :, None].expand(-1, -1, len(spatial_shapes), -1)

    def forward(
        self, srcs: Sequence[torch.Tensor], pos_embeds: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        shapes = [(int(s.shape[-2]), int(s.shape[-1])) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat(
            [
                p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                for lvl, p in enumerate(pos_embeds)
            ],
            1,
        )
        ref = self.reference_points(shapes, src.device, src.dtype)
        out = src
        for layer in self.encoder.layers:
            out = layer(out, pos, ref, shapes)
        return out, shapes


class MSDeformAttnPixelDecoder(nn.Module):
    """``forward(features {name: (B, C, H/s, W/s)}) -> (mask_features, multi_scale_features)``.

    ``mask_features`` is (B, mask_dim, H/common_stride, W/common_stride);
    ``multi_scale_features`` holds 3 maps of conv_dim channels, low resolution first
    (the transformer decoder's level order).
    """

    def __init__(
        self,
        feature_channels: Mapping[str, int],
        feature_strides: Mapping[str, int],
        *,
        transformer_in_features: Sequence[str] = ("s3", "s4", "s5"),
        conv_dim: int = 256,
        mask_dim: int = 256,
        enc_layers: int = 6,
        num_heads: int = 8,
        enc_dim_feedforward: int = 1024,
        enc_points: int = 4,
        common_stride: int = 4,
    ) -> None:
        super().__init__()
        order = sorted(feature_strides, key=lambda k: feature_strides[k])
        self.in_features = order  # high resolution first
        self.transformer_in_features = sorted(
            transformer_in_features, key=lambda k: feature_strides[k]
        )
        n_levels = len(self.transformer_in_features)
        # low resolution first (s5 -> s3), like the reference
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(feature_channels[k], conv_dim, 1), group_norm(conv_dim))
            for k in self.transformer_in_features[::-1]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0.0)
        self.transformer = MSDeformAttnTransformerEncoderOnly(
            conv_dim, num_heads, enc_layers, enc_dim_feedforward, n_levels, enc_points
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2)
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 1)
        c2_xavier_fill(self.mask_features)
        self.maskformer_num_feature_levels = 3
        self.common_stride = common_stride
        min_stride = min(feature_strides[k] for k in self.transformer_in_features)
        self.num_fpn_levels = int(math.log2(min_stride) - math.log2(common_stride))
        lateral, output = [], []
        for idx, name in enumerate(self.in_features[: self.num_fpn_levels]):
            lat = ConvNorm(
                feature_channels[name], conv_dim, 1, norm=group_norm(conv_dim), bias=False
            )
            out = ConvNorm(
                conv_dim,
                conv_dim,
                3,
                padding=1,
                bias=False,
                norm=group_norm(conv_dim),
                activation=F.relu,
            )
            c2_xavier_fill(lat)
            c2_xavier_fill(out)
            self.add_module(f"adapter_{idx + 1}", lat)
            self.add_module(f"layer_{idx + 1}", out)
            lateral.append(lat)
            output.append(out)
        # top-down order (low to high resolution); plain lists, registered above by name
        self._lateral = lateral[::-1]
        self._output = output[::-1]

    def forward(
        self, features: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        srcs, pos = [], []
        for idx, name in enumerate(self.transformer_in_features[::-1]):
            x = features[name]
            srcs.append(self.input_proj[idx](x))
            pos.append(self.pe_layer(x))
        memory, shapes = self.transformer(srcs, pos)
        b = memory.shape[0]
        out = [
            z.transpose(1, 2).reshape(b, -1, h, w)
            for z, (h, w) in zip(
                memory.split([h * w for h, w in shapes], dim=1), shapes, strict=True
            )
        ]
        for idx, name in enumerate(self.in_features[: self.num_fpn_levels][::-1]):
            cur = self._lateral[idx](features[name])
            y = cur + F.interpolate(
                out[-1], size=cur.shape[-2:], mode="bilinear", align_corners=False
            )
            out.append(self._output[idx](y))
        return self.mask_features(out[-1]), out[: self.maskformer_num_feature_levels]
