"""Multi-scale deformable attention against a slow reference written from the formula.

Deformable DETR (Zhu et al. 2021), eq. 3:
    MSDeformAttn(z_q, p_q, {x_l}) = sum_m W_m sum_l sum_k A_mlqk W'_m x_l(phi_l(p_q) + dp_mlqk)
with x_l(.) bilinear interpolation at pixel (u * W_l - 0.5, v * H_l - 0.5) (the reference CUDA
kernel's convention: pixel centres at integer + 0.5), corners outside the map contributing zero.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xmask3d_ros.model.msdeform_attn import MSDeformAttn, ms_deform_attn


def _bilinear(img: np.ndarray, x: float, y: float) -> np.ndarray:
    """img (H, W, D); (x, y) continuous pixel coordinates; zero outside."""
    h, w, d = img.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = np.zeros(d)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[yy, xx]
    return out


def _slow_core(value, shapes, loc, attn) -> np.ndarray:
    """value (B, S, M, D), loc (B, Lq, M, L, P, 2), attn (B, Lq, M, L, P) -> (B, Lq, M*D)."""
    value, loc, attn = (t.detach().double().numpy() for t in (value, loc, attn))
    b_, _, m_, d_ = value.shape
    _, lq_, _, _, p_, _ = loc.shape
    starts = np.cumsum([0] + [h * w for h, w in shapes])
    out = np.zeros((b_, lq_, m_ * d_))
    for b in range(b_):
        for q in range(lq_):
            for m in range(m_):
                acc = np.zeros(d_)
                for lvl, (h, w) in enumerate(shapes):
                    img = value[b, starts[lvl] : starts[lvl + 1], m].reshape(h, w, d_)
                    for k in range(p_):
                        u, v = loc[b, q, m, lvl, k]
                        acc += attn[b, q, m, lvl, k] * _bilinear(img, u * w - 0.5, v * h - 0.5)
                out[b, q, m * d_ : (m + 1) * d_] = acc
    return out


@pytest.mark.parametrize(
    ("shapes", "heads", "points"),
    [([(5, 7), (3, 4), (2, 2)], 2, 3), ([(6, 6)], 1, 4), ([(4, 9), (2, 5), (1, 3), (1, 1)], 3, 2)],
)
def test_core_equals_slow_reference(shapes, heads, points) -> None:
    g = torch.Generator().manual_seed(len(shapes) * 10 + heads)
    b, lq, d = 2, 5, 3
    s = sum(h * w for h, w in shapes)
    value = torch.randn(b, s, heads, d, generator=g, dtype=torch.float64)
    # locations partly outside [0, 1] to exercise the zero padding
    loc = (
        torch.rand(b, lq, heads, len(shapes), points, 2, generator=g, dtype=torch.float64) * 1.4
        - 0.2
    )
    attn = torch.randn(b, lq, heads, len(shapes) * points, generator=g, dtype=torch.float64)
    attn = attn.softmax(-1).view(b, lq, heads, len(shapes), points)
    fast = ms_deform_attn(value, shapes, loc, attn)
    assert fast.shape == (b, lq, heads * d)
    np.testing.assert_allclose(fast.numpy(), _slow_core(value, shapes, loc, attn), atol=1e-10)


def test_module_equals_formula_with_random_weights() -> None:
    torch.manual_seed(0)
    shapes = [(4, 6), (2, 3)]
    c, m, lv, p, b, lq = 8, 2, 2, 3, 1, 4
    attn_mod = MSDeformAttn(c, lv, m, p).double()
    with torch.no_grad():
        for prm in attn_mod.parameters():
            prm.add_(0.3 * torch.randn_like(prm))
    s = sum(h * w for h, w in shapes)
    query = torch.randn(b, lq, c, dtype=torch.float64)
    src = torch.randn(b, s, c, dtype=torch.float64)
    ref = torch.rand(b, lq, lv, 2, dtype=torch.float64)
    out = attn_mod(query, ref, src, shapes)

    # the formula spelled out: values per head, offsets in pixels of each level, softmax on (l, k)
    value = (src @ attn_mod.value_proj.weight.T + attn_mod.value_proj.bias).view(b, s, m, c // m)
    off = query @ attn_mod.sampling_offsets.weight.T + attn_mod.sampling_offsets.bias
    off = off.view(b, lq, m, lv, p, 2)
    a = query @ attn_mod.attention_weights.weight.T + attn_mod.attention_weights.bias
    a = a.view(b, lq, m, lv * p).softmax(-1).view(b, lq, m, lv, p)
    wh = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float64)
    loc = ref[:, :, None, :, None, :] + off / wh[None, None, None, :, None, :]
    heads = torch.from_numpy(_slow_core(value, shapes, loc, a))
    expected = heads @ attn_mod.output_proj.weight.T + attn_mod.output_proj.bias
    torch.testing.assert_close(out, expected, atol=1e-9, rtol=1e-9)


def test_reference_initialisation() -> None:
    mod = MSDeformAttn(16, n_levels=3, n_heads=4, n_points=2)
    bias = mod.sampling_offsets.bias.view(4, 3, 2, 2)
    # head m points along angle 2 pi m / 4 (scaled so the larger coordinate is 1), point k at k+1
    expected_dir = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    for k in range(2):
        torch.testing.assert_close(bias[:, 1, k], expected_dir * (k + 1), atol=1e-6, rtol=0)
    assert torch.count_nonzero(mod.sampling_offsets.weight) == 0
    assert torch.count_nonzero(mod.attention_weights.weight) == 0  # uniform attention at init


def test_gradients_match_finite_differences() -> None:
    g = torch.Generator().manual_seed(3)
    shapes = [(3, 4), (2, 2)]
    value = torch.randn(1, 16, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    loc = (
        torch.rand(1, 3, 2, 2, 2, 2, generator=g, dtype=torch.float64) * 0.8 + 0.1
    ).requires_grad_()
    attn = torch.rand(1, 3, 2, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v, lc, a: ms_deform_attn(v, shapes, lc, a), (value, loc, attn)
    )


def test_shape_mismatch_is_reported() -> None:
    with pytest.raises(ValueError, match="spatial_shapes"):
        ms_deform_attn(
            torch.zeros(1, 10, 1, 2),
            [(3, 3)],
            torch.zeros(1, 2, 1, 1, 1, 2),
            torch.zeros(1, 2, 1, 1, 1),
        )
