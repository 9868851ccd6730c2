"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021, eq. 3) in pure PyTorch.

    MSDeformAttn(z_q, p_q, {x_l}) = sum_m W_m [sum_l sum_k A_mlqk W'_m x_l(phi_l(p_q) + dp_mlqk)]

The reference (Mask2Former's ``ops/modules/ms_deform_attn.py``) needs a compiled CUDA op; here the
bilinear sampling is ``F.grid_sample`` (``align_corners=False``, zero padding), which samples
exactly where the CUDA kernel does (pixel ``loc * size - 0.5``, out-of-image corners count as 0),
so the module runs on CPU, CUDA and Jetson and exports to ONNX. Parameter names, shapes and the
initialisation follow the reference, so its weights load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MSDeformAttn", "ms_deform_attn"]


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: Sequence[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The sampling + weighted sum core of multi-scale deformable attention.

    Args:
        value: (B, S, M, D) per-head values of all levels, flattened row-major level after level
            (S = sum of H_l * W_l).
        spatial_shapes: (H_l, W_l) of each of the L levels, in the order of ``value``.
        sampling_locations: (B, Lq, M, L, P, 2) normalised (x, y) in [0, 1] (outside = zeros).
        attention_weights: (B, Lq, M, L, P), already normalised over (L, P).

    Returns:
        (B, Lq, M * D), heads concatenated.
    """
    b, s, m, d = value.shape
    _, lq, _, num_levels, p, _ = sampling_locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes]
    if len(sizes) != num_levels or sum(sizes) != s:
        raise ValueError(
            f"spatial_shapes {list(spatial_shapes)} do not match value length {s} and "
            f"{num_levels} sampling levels"
        )
    values = value.split(sizes, dim=1)
    grids = 2.0 * sampling_locations - 1.0  # grid_sample's [-1, 1] convention
    sampled = []
    for lvl, (h, w) in enumerate(spatial_shapes):
        v = values[lvl].flatten(2).transpose(1, 2).reshape(b * m, d, int(h), int(w))
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (B*M, Lq, P, 2)
        sampled.append(
            F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # (B*M, D, Lq, P)
    weights = attention_weights.transpose(1, 2).reshape(b * m, 1, lq, num_levels * p)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)  # (B*M, D, Lq)
    return out.view(b, m * d, lq).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention with the reference's parameters and initialisation.

    ``forward(query (B, Lq, C), reference_points (B, Lq, L, 2), value_input (B, S, C),
    spatial_shapes, padding_mask (B, S) bool | None) -> (B, Lq, C)``; reference points are
    normalised (x, y) per level, offsets are predicted in pixels of each level.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = (
            d_model,
            n_levels,
            n_heads,
            n_points,
        )
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reference init: offsets start on a ring of n_heads directions, point k at radius k+1."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value_input: torch.Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, lq, _ = query.shape
        s = value_input.shape[1]
        m, num_levels, p = self.n_heads, self.n_levels, self.n_points
        if reference_points.shape[-1] != 2:
            raise ValueError(
                f"reference_points must end in (x, y), got shape {tuple(reference_points.shape)}"
            )
        value = self.value_proj(value_input)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(b, s, m, self.d_model // m)
        offsets = self.sampling_offsets(query).view(b, lq, m, num_levels, p, 2)
        weights = self.attention_weights(query).view(b, lq, m, num_levels * p).softmax(-1)
        weights = weights.view(b, lq, m, num_levels, p)
        # offsets are in pixels of each level: divide by (W_l, H_l)
        normalizer = torch.tensor(
            [[float(w), float(h)] for h, w in spatial_shapes],
            dtype=query.dtype,
            device=query.device,
        )
        locations = (
            reference_points[:, :, None, :, None, :]
            + offsets / normalizer[None, None, None, :, None, :]
        )
        out = ms_deform_attn(value, spatial_shapes, locations, weights)
        return self.output_proj(out)
