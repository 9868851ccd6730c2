"""Pixel decoder and masked-attention decoder: shapes, deep supervision, pooling, logits."""

from __future__ import annotations

import math

import pytest
import torch

from xmask3d_ros.config.model import MaskGeneratorCfg
from xmask3d_ros.model.mask_decoder import (
    MaskedTransformerDecoder,
    PooledMaskEmbed,
    _AttentionLayer,
    mask_pooling,
)
from xmask3d_ros.model.pixel_decoder import MSDeformAttnPixelDecoder, PositionEmbeddingSine

CFG = MaskGeneratorCfg(
    num_queries=6,
    dec_layers=4,
    hidden_dim=32,
    num_heads=4,
    dim_feedforward=48,
    enc_layers=2,
    enc_dim_feedforward=40,
    conv_dim=32,
    mask_dim=24,
)
NAMES = ("s2", "s3", "s4", "s5")


def _features(b: int = 2, c: int = 16, size: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        n: torch.randn(b, c, size // 2 ** (i + 2), size // 2 ** (i + 2), generator=g)
        for i, n in enumerate(NAMES)
    }


def _pixel_decoder(c: int = 16) -> MSDeformAttnPixelDecoder:
    return MSDeformAttnPixelDecoder(
        dict.fromkeys(NAMES, c),
        {n: 2 ** (i + 2) for i, n in enumerate(NAMES)},
        conv_dim=CFG.conv_dim,
        mask_dim=CFG.mask_dim,
        enc_layers=CFG.enc_layers,
        num_heads=CFG.num_heads,
        enc_dim_feedforward=CFG.enc_dim_feedforward,
    )


def test_pixel_decoder_shapes() -> None:
    torch.manual_seed(0)
    dec = _pixel_decoder()
    mask_features, multi = dec(_features())
    assert mask_features.shape == (2, CFG.mask_dim, 16, 16)  # common stride 4
    assert [tuple(m.shape) for m in multi] == [(2, 32, 2, 2), (2, 32, 4, 4), (2, 32, 8, 8)]
    assert dec.num_fpn_levels == 1 and len(dec.transformer.encoder.layers) == CFG.enc_layers


def test_position_embedding_is_detr_sine() -> None:
    pe = PositionEmbeddingSine(4)(torch.zeros(1, 1, 3, 5))
    assert pe.shape == (1, 8, 3, 5)
    # channel 0 is sin(y / 10000^0), y = row / H * 2 pi (rows counted from 1);
    # channel 7 is cos(x / 10000^(2/4))
    y = 2 * math.pi * 2 / 3  # row index 1 -> cumsum 2
    x = 2 * math.pi * 4 / 5  # col index 3 -> cumsum 4
    assert float(pe[0, 0, 1, 3]) == pytest.approx(math.sin(y), abs=1e-5)
    assert float(pe[0, 7, 1, 3]) == pytest.approx(math.cos(x / 100.0), abs=1e-5)


def test_decoder_predicts_after_every_layer() -> None:
    torch.manual_seed(0)
    pix = _pixel_decoder()
    dec = MaskedTransformerDecoder(CFG, in_channels=CFG.conv_dim, embed_dim=20)
    mask_features, multi = pix(_features())
    out = dec(multi, mask_features)
    assert out.pred_masks.shape == (2, 6, 16, 16) and out.mask_embed.shape == (2, 6, 20)
    assert len(out.aux) == CFG.dec_layers  # + the final one = dec_layers + 1 predictions
    for p in out.aux:
        assert p.pred_masks.shape == (2, 6, 16, 16) and p.mask_embed.shape == (2, 6, 20)
    assert float(out.logit_scale.detach()) == pytest.approx(1 / 0.07, rel=1e-5)
    # the first prediction comes from the learnable queries alone, through decoder_norm
    q = dec.decoder_norm(dec.query_feat.weight)
    first = torch.einsum("qc,bchw->bqhw", dec.mask_embed(q), mask_features)
    torch.testing.assert_close(out.aux[0].pred_masks, first)
    loss = out.pred_masks.mean() + out.mask_embed.mean() + sum(a.pred_masks.mean() for a in out.aux)
    loss.backward()
    assert dec.query_feat.weight.grad is not None and pix.input_proj[0][0].weight.grad is not None


def test_cross_attention_masks_out_true_positions_and_is_post_norm() -> None:
    torch.manual_seed(0)
    layer = _AttentionLayer(8, 2, cross=True).double()
    tgt, qpos = torch.randn(3, 1, 8, dtype=torch.float64), torch.randn(3, 1, 8, dtype=torch.float64)
    mem, pos = torch.randn(5, 1, 8, dtype=torch.float64), torch.randn(5, 1, 8, dtype=torch.float64)
    mask = torch.rand(2, 3, 5) < 0.5
    mask[:, :, 0] = False  # every query keeps at least one key
    out = layer(tgt, qpos, mem, pos, mask)
    attn = layer.multihead_attn
    wq, wk, wv = attn.in_proj_weight.chunk(3)
    bq, bk, bv = attn.in_proj_bias.chunk(3)
    q = (tgt + qpos)[:, 0] @ wq.T + bq
    k = (mem + pos)[:, 0] @ wk.T + bk
    v = mem[:, 0] @ wv.T + bv
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        logits = (q[:, sl] @ k[:, sl].T) / 2.0  # sqrt(head dim 4)
        logits = logits.masked_fill(mask[h], float("-inf"))  # True = may not attend
        heads.append(logits.softmax(-1) @ v[:, sl])
    attended = torch.cat(heads, -1) @ attn.out_proj.weight.T + attn.out_proj.bias
    expected = torch.nn.functional.layer_norm(
        tgt[:, 0] + attended, (8,), layer.norm.weight, layer.norm.bias
    )
    torch.testing.assert_close(out[:, 0], expected)


def test_hard_mask_pooling() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 3, 4, 4, generator=g)
    logits = torch.randn(1, 2, 4, 4, generator=g)
    logits[0, 1] = -5.0  # an empty mask pools to zeros
    pooled = mask_pooling(feats, logits)
    sel = logits[0, 0].sigmoid() > 0.5
    torch.testing.assert_close(pooled[0, 0], feats[0][:, sel].mean(-1), rtol=1e-5, atol=1e-6)
    assert torch.count_nonzero(pooled[0, 1]) == 0


@torch.no_grad()
def test_pooled_mask_embed_logits_scale_and_null() -> None:
    torch.manual_seed(0)
    pme = PooledMaskEmbed(8, 8, 6)
    emb = pme(torch.randn(2, 3, 8), torch.randn(2, 8, 5, 5), torch.randn(2, 3, 5, 5))
    assert emb.shape == (2, 3, 6)
    text = torch.randn(4, 6)
    logits = pme.class_logits(emb, text)
    assert logits.shape == (2, 3, 5)  # K classes + null
    cos = torch.nn.functional.cosine_similarity(emb[1, 2], pme.null_embed[0], dim=0)
    assert float(logits[1, 2, 4]) == pytest.approx(float(cos) / 0.07, rel=1e-4)
    cos = torch.nn.functional.cosine_similarity(emb[0, 1], text[3], dim=0)
    assert float(logits[0, 1, 3]) == pytest.approx(float(cos) / 0.07, rel=1e-4)
    with torch.no_grad():
        pme.logit_scale.fill_(10.0)
    assert float(pme.scale()) == 100.0  # clamped
    pme.set_null_embed(torch.ones(6))
    assert torch.equal(pme.null_embed, torch.ones(1, 6))
