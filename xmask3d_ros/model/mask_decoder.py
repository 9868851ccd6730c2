"""Masked-attention transformer decoder with pooled mask embeddings (reference-notes §1.6).

Mask2Former's ``MultiScaleMaskedTransformerDecoder`` in ODISE's flavour
(``ODISEMultiScaleMaskedTransformerDecoder`` + ``PooledMaskEmbed``): learnable queries attend,
layer by layer, to the three pixel-decoder scales (low resolution first) with the attention of
each query restricted to where its previous mask prediction is > 0.5 (cross-attention, then
self-attention, then FFN; post-norm). After the input queries and after every layer the heads
predict a mask per query and, by hard mask pooling of the mask features, a ``embed_dim``-d mask
embedding in CLIP space: ``dec_layers + 1`` predictions, all used for deep supervision.

Class logits are not a head of their own: ``PooledMaskEmbed.class_logits`` scores the mask
embeddings against (CLIP) text embeddings plus a learnable null embedding, with the learnable
logit scale (init 1/0.07, clamped at 100), as the reference's ``cal_pred_logits``.
Module names follow Mask2Former/ODISE so reference checkpoints map by name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from xmask3d_ros.config.model import MaskGeneratorCfg
from xmask3d_ros.model.pixel_decoder import PositionEmbeddingSine, c2_xavier_fill

__all__ = [
    "MLP",
    "MaskDecoderOutput",
    "MaskPrediction",
    "MaskedTransformerDecoder",
    "PooledMaskEmbed",
    "mask_pooling",
]


@dataclass(frozen=True)
class MaskPrediction:
    """One set of predictions (final or auxiliary)."""

    pred_masks: torch.Tensor  # (B, Q, h, w) float mask logits on the mask-feature grid
    mask_embed: torch.Tensor  # (B, Q, E) mask embeddings in CLIP space (not normalised)


@dataclass(frozen=True)
class MaskDecoderOutput:
    """Final prediction, the ``dec_layers`` earlier ones (deep supervision) and the logit scale."""

    pred_masks: torch.Tensor  # (B, Q, h, w)
    mask_embed: torch.Tensor  # (B, Q, E)
    aux: tuple[MaskPrediction, ...]  # predictions on the input queries and after layers 1..L-1
    logit_scale: torch.Tensor  # () clamped exp of the learnable log scale


class MLP(nn.Module):
    """Linear layers with ReLU between them (DETR / Mask2Former ``MLP``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.num_layers = num_layers
        self.layers = nn.ModuleList(
            nn.Linear(i, o) for i, o in zip(dims, [*dims[1:], output_dim], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return x


class _AttentionLayer(nn.Module):
    """Post-norm attention block; ``cross`` picks the reference's attribute name."""

    def __init__(self, d_model: int, nhead: int, *, cross: bool) -> None:
        super().__init__()
        attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0)
        self.cross = cross
        if cross:
            self.multihead_attn = attn
        else:
            self.self_attn = attn
        self.norm = nn.LayerNorm(d_model)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        memory: torch.Tensor | None = None,
        pos: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q = tgt + query_pos
        if self.cross:
            assert memory is not None and pos is not None
            out = self.multihead_attn(
                q, memory + pos, memory, attn_mask=memory_mask, need_weights=False
            )[0]
        else:
            out = self.self_attn(q, q, tgt, need_weights=False)[0]
        return self.norm(tgt + out)


class _FFNLayer(nn.Module):
    def __init__(self, d_model: int, dim_feedforward: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


def mask_pooling(
    features: torch.Tensor, mask_logits: torch.Tensor, threshold: float = 0.5
) -> torch.Tensor:
    """Hard mask pooling (ODISE ``MaskPooling``): mean of ``features`` where sigmoid > threshold.

    features (B, C, H, W), mask_logits (B, Q, H, W) -> (B, Q, C). The mask is detached (the
    pooling is not differentiable w.r.t. the mask); an empty mask pools to zeros.
    """
    mask = (mask_logits.detach().sigmoid() > threshold).to(features.dtype)
    denom = mask.sum(dim=(-1, -2), keepdim=True) + 1e-8
    return torch.einsum("bchw,bqhw->bqc", features, mask / denom)


class PooledMaskEmbed(nn.Module):
    """Mask embedding from pooled mask features + query output (ODISE ``PooledMaskEmbed``).

    ``forward(decoder_output (B, Q, hidden), mask_features (B, mask_dim, h, w),
    pred_masks (B, Q, h, w)) -> (B, Q, embed_dim)``.
    """

    def __init__(
        self,
        hidden_dim: int,
        mask_dim: int,
        embed_dim: int,
        *,
        logit_scale_init: float = 1.0 / 0.07,
        logit_scale_max: float = 100.0,
        mask_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        # ODISE writes LayerNorm(hidden)+Linear(hidden, hidden), LayerNorm(mask_dim)+MLP(mask_dim..)
        # which only works for mask_dim == hidden_dim; the widths below are the ones that
        # type-check in general and are identical when the two are equal (256 in the paper).
        self.pool_proj = nn.Sequential(nn.LayerNorm(mask_dim), nn.Linear(mask_dim, hidden_dim))
        self.mask_embed = nn.Sequential(
            nn.LayerNorm(hidden_dim), MLP(hidden_dim, hidden_dim, embed_dim, 3)
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))
        # reference: CLIP("") text embedding (CategoryEmbed.null_embed); set_null_embed() puts it
        # in place once CLIP is loaded. Random init: a seeded-normal placeholder.
        self.null_embed = nn.Parameter(torch.randn(1, embed_dim) * embed_dim**-0.5)
        self.logit_scale_max = logit_scale_max
        self.mask_threshold = mask_threshold

    def scale(self) -> torch.Tensor:
        """The temperature: exp(logit_scale) clamped at ``logit_scale_max``."""
        return self.logit_scale.exp().clamp(max=self.logit_scale_max)

    @torch.no_grad()
    def set_null_embed(self, embedding: torch.Tensor) -> None:
        """Initialise the null embedding, e.g. with CLIP's text embedding of "" (1, E)."""
        self.null_embed.copy_(embedding.reshape(1, -1).to(self.null_embed))

    def forward(
        self, decoder_output: torch.Tensor, mask_features: torch.Tensor, pred_masks: torch.Tensor
    ) -> torch.Tensor:
        pooled = self.pool_proj(mask_pooling(mask_features, pred_masks, self.mask_threshold))
        return self.mask_embed(pooled + decoder_output)

    def class_logits(self, mask_embed: torch.Tensor, text_embed: torch.Tensor) -> torch.Tensor:
        """Reference ``cal_pred_logits``: (B, Q, E) x (K, E) -> (B, Q, K + 1), null class last."""
        scale = self.scale()
        m = F.normalize(mask_embed, dim=-1)
        t = F.normalize(torch.cat([text_embed, self.null_embed.to(text_embed)], 0), dim=-1)
        return scale * (m @ t.t())


class MaskedTransformerDecoder(nn.Module):
    """``forward(multi_scale [3 x (B, in_channels, h_l, w_l)], mask_features) -> output``.

    Levels are used round-robin (layer i attends to level i % 3), low resolution first.
    """

    num_feature_levels = 3

    def __init__(self, cfg: MaskGeneratorCfg, *, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        hidden, heads = cfg.hidden_dim, cfg.num_heads
        self.num_heads, self.num_layers = heads, cfg.dec_layers
        self.mask_threshold = cfg.mask_threshold
        self.pe_layer = PositionEmbeddingSine(hidden // 2)
        self.transformer_self_attention_layers = nn.ModuleList(
            _AttentionLayer(hidden, heads, cross=False) for _ in range(cfg.dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            _AttentionLayer(hidden, heads, cross=True) for _ in range(cfg.dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            _FFNLayer(hidden, cfg.dim_feedforward) for _ in range(cfg.dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden)
        self.query_feat = nn.Embedding(cfg.num_queries, hidden)
        self.query_embed = nn.Embedding(cfg.num_queries, hidden)
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden)
        projections: list[nn.Module] = []
        for _ in range(self.num_feature_levels):
            if in_channels != hidden:
                conv = nn.Conv2d(in_channels, hidden, 1)
                c2_xavier_fill(conv)
                projections.append(conv)
            else:
                projections.append(nn.Sequential())
        self.input_proj = nn.ModuleList(projections)
        self.mask_embed = MLP(hidden, hidden, cfg.mask_dim, 3)
        self.post_mask_embed = PooledMaskEmbed(
            hidden,
            cfg.mask_dim,
            embed_dim,
            logit_scale_init=cfg.logit_scale_init,
            logit_scale_max=cfg.logit_scale_max,
            mask_threshold=cfg.mask_threshold,
        )

    def _predict(
        self, output: torch.Tensor, mask_features: torch.Tensor, target_size: tuple[int, int]
    ) -> tuple[MaskPrediction, torch.Tensor]:
        decoder_output = self.decoder_norm(output).transpose(0, 1)  # (B, Q, hidden)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoder_output), mask_features)
        embed = self.post_mask_embed(decoder_output, mask_features, masks)
        attn = F.interpolate(masks, size=target_size, mode="bilinear", align_corners=False)
        # True = may not attend; (B * heads, Q, h*w) as nn.MultiheadAttention wants
        attn_mask = attn.sigmoid().flatten(2) < 0.5
        attn_mask = attn_mask.unsqueeze(1).expand(-1, self.num_heads, -1, -1).flatten(0, 1)
        return MaskPrediction(masks, embed), attn_mask.detach()

    def forward(
        self, multi_scale: Sequence[torch.Tensor], mask_features: torch.Tensor
    ) -> MaskDecoderOutput:
        if len(multi_scale) != self.num_feature_levels:
            raise ValueError(
                f"expected {self.num_feature_levels} feature levels, got {len(multi_scale)}"
            )
        src, pos, sizes = [], [], []
        for i, x in enumerate(multi_scale):
            sizes.append((int(x.shape[-2]), int(x.shape[-1])))
            pos.append(self.pe_layer(x).flatten(2).permute(2, 0, 1))  # (hw, B, C)
            src.append(
                (
                    self.input_proj[i](x).flatten(2) + self.level_embed.weight[i][None, :, None]
                ).permute(2, 0, 1)
            )
        bs = src[0].shape[1]
        query_embed = self.query_embed.weight.unsqueeze(1).expand(-1, bs, -1)
        output = self.query_feat.weight.unsqueeze(1).expand(-1, bs, -1)
        preds = []
        pred, attn_mask = self._predict(output, mask_features, sizes[0])
        preds.append(pred)
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            # a query whose mask is empty at this level may attend everywhere (reference)
            attn_mask = attn_mask & ~attn_mask.all(-1, keepdim=True)
            output = self.transformer_cross_attention_layers[i](
                output, query_embed, src[level], pos[level], attn_mask
            )
            output = self.transformer_self_attention_layers[i](output, query_embed)
            output = self.transformer_ffn_layers[i](output)
            pred, attn_mask = self._predict(
                output, mask_features, sizes[(i + 1) % self.num_feature_levels]
            )
            preds.append(pred)
        final = preds[-1]
        return MaskDecoderOutput(
            pred_masks=final.pred_masks,
            mask_embed=final.mask_embed,
            aux=tuple(preds[:-1]),
            logit_scale=self.post_mask_embed.scale(),
        )
