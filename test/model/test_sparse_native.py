"""The pure-PyTorch sparse backend against dense convolutions on the densified grid.

Semantics mirrored (MinkowskiEngine 0.5.4, see xmask3d_ros/model/sparse/base.py): kernel index
k = i_x + K*i_y + K^2*i_z, per-axis offset (i - K//2)*t for odd K and i*t for even K, weights
(K^3, C_in, C_out); a stride-s conv outputs floor(c/(t*s))*(t*s); a transposed conv writes
c + offset_k*t_out onto the given finer coordinates. On a grid with origin 0 this equals
``conv3d`` (odd K: padding K//2; even K: padding 0 left, K-1 right) and ``conv_transpose3d``
(output index shifted by K//2 for odd K), read at the sparse output coordinates.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from xmask3d_ros.model.sparse import BackendUnavailableError, get_backend
from xmask3d_ros.model.sparse import coord_set as cs_mod
from xmask3d_ros.model.sparse import torch_native as tn
from xmask3d_ros.model.sparse.base import voxelize_coordinates
from xmask3d_ros.model.sparse.coords import kernel_offsets

B = get_backend("torch_native")
DT = torch.float64


def random_coords(n: int, grid: int, t: int = 1, batches: int = 2, seed: int = 0) -> torch.Tensor:
    """Unique (M, 4) coordinates, multiples of ``t``, in [0, grid*t)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.cat(
        [
            torch.randint(0, batches, (n, 1), generator=g),
            torch.randint(0, grid, (n, 3), generator=g) * t,
        ],
        dim=1,
    )
    return torch.unique(c, dim=0)


def densify(coords: torch.Tensor, feats: torch.Tensor, t: int, size: int) -> torch.Tensor:
    """(B, C, size, size, size) grid, index = coord / t; differentiable in ``feats``."""
    c = coords.long()
    dense = feats.new_zeros(int(c[:, 0].max()) + 1, size, size, size, feats.shape[1])
    dense = dense.index_put((c[:, 0], c[:, 1] // t, c[:, 2] // t, c[:, 3] // t), feats)
    return dense.permute(0, 4, 1, 2, 3)


def read(dense: torch.Tensor, coords: torch.Tensor, t: int, shift: int = 0) -> torch.Tensor:
    c = coords.long()
    idx = (c[:, 0], slice(None), c[:, 1] // t + shift, c[:, 2] // t + shift, c[:, 3] // t + shift)
    return dense.permute(0, 2, 3, 4, 1)[idx[0], idx[2], idx[3], idx[4]]


def dense_weight(kernel: torch.Tensor, k: int, transposed: bool) -> torch.Tensor:
    """ME (K^3, C_in, C_out) -> conv3d (C_out, C_in, kx, ky, kz) or conv_transpose3d (C_in, C_out,
    kx, ky, kz); the dense grid's dims are (x, y, z)."""
    w = kernel.reshape(k, k, k, kernel.shape[-2], kernel.shape[-1])  # [kz, ky, kx, in, out]
    return w.permute(3, 4, 2, 1, 0) if transposed else w.permute(4, 3, 2, 1, 0)


def dense_conv(coords, feats, kernel, k, s, t, grid):
    x = densify(coords, feats, t, grid)
    left, right = (k // 2, k // 2) if k % 2 else (0, k - 1)
    x = F.pad(x, (left, right) * 3)
    return F.conv3d(x, dense_weight(kernel.reshape(k**3, *kernel.shape[-2:]), k, False), stride=s)


@pytest.mark.parametrize("t", [1, 2])
@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_conv_equals_dense_conv3d(k: int, s: int, t: int) -> None:
    grid = 8
    coords = random_coords(120, grid, t, seed=k * 10 + s + t)
    feats = torch.randn(coords.shape[0], 3, dtype=DT, requires_grad=True)
    conv = B.conv(3, 4, kernel_size=k, stride=s).to(DT)
    x = B.make_tensor(coords, feats, tensor_stride=t)
    y = conv(x)

    expect_coords = coords.clone()
    expect_coords[:, 1:] = torch.div(coords[:, 1:], t * s, rounding_mode="floor") * (t * s)
    assert torch.equal(y.C.long(), torch.unique(expect_coords, dim=0))
    assert y.tensor_stride == t * s

    dense = dense_conv(coords, feats, conv.kernel, k, s, t, grid)
    ref = read(dense, y.C, t * s)
    torch.testing.assert_close(y.F, ref)

    weights = torch.randn_like(ref)
    g_sparse = torch.autograd.grad((y.F * weights).sum(), [feats, conv.kernel])
    g_dense = torch.autograd.grad((ref * weights).sum(), [feats, conv.kernel])
    for a, b in zip(g_sparse, g_dense, strict=False):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("t", [1, 2])
@pytest.mark.parametrize("k", [2, 3])
def test_transposed_conv_equals_dense_conv_transpose3d(k: int, t: int) -> None:
    grid = 8
    fine_coords = random_coords(150, grid, t, seed=k + t)
    fine = B.make_tensor(fine_coords, torch.zeros(fine_coords.shape[0], 1, dtype=DT), t)
    coarse_cs, _ = fine.coord_set.downsample(2)
    feats = torch.randn(len(coarse_cs), 3, dtype=DT, requires_grad=True)
    coarse = tn.SparseTensor(feats, coarse_cs)
    up = B.conv_transpose(3, 4, kernel_size=k, stride=2).to(DT)
    y = up(coarse, fine)
    assert torch.equal(y.C, fine.C) and y.tensor_stride == t

    x = densify(coarse.C, feats, 2 * t, grid // 2)
    dense = F.conv_transpose3d(x, dense_weight(up.kernel, k, True), stride=2)
    ref = read(dense, fine.C, t, shift=k // 2 if k % 2 else 0)
    torch.testing.assert_close(y.F, ref)

    weights = torch.randn_like(ref)
    g_sparse = torch.autograd.grad((y.F * weights).sum(), [feats, up.kernel])
    g_dense = torch.autograd.grad((ref * weights).sum(), [feats, up.kernel])
    for a, b in zip(g_sparse, g_dense, strict=False):
        torch.testing.assert_close(a, b)


def test_transposed_conv_defaults_to_parent_coordinates() -> None:
    coords = random_coords(100, 6)
    x = B.make_tensor(coords, torch.randn(coords.shape[0], 2))
    down = B.conv(2, 2, kernel_size=2, stride=2)(x)
    up = B.conv_transpose(2, 3)
    assert torch.equal(up(down).F, up(down, x).F)
    alone = B.make_tensor(down.C, down.F, tensor_stride=2)  # no parent: ME-style expansion
    assert up(alone).C.shape[0] == 8 * down.C.shape[0]


def test_kernel_offset_order_is_minkowski() -> None:
    off = kernel_offsets(3)
    assert off[0].tolist() == [-1, -1, -1] and off[1].tolist() == [0, -1, -1]  # x fastest
    assert off[3].tolist() == [-1, 0, -1] and off[9].tolist() == [-1, -1, 0]
    assert off[13].tolist() == [0, 0, 0]
    assert kernel_offsets(2).tolist()[:3] == [[0, 0, 0], [1, 0, 0], [0, 1, 0]]  # even: 0..K-1


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.sampled_from([2, 3]),
    s=st.sampled_from([1, 2]),
    table=st.booleans(),
    negative=st.booleans(),
)
def test_kernel_map_equals_brute_force(
    seed: int, k: int, s: int, table: bool, negative: bool
) -> None:
    """Both lookup paths (direct table, searchsorted) give exactly the brute-force pairs."""
    coords = random_coords(60, 5, seed=seed)
    if negative:
        coords[:, 1:] -= 3
    old = cs_mod._TABLE_MAX_CELLS
    cs_mod._TABLE_MAX_CELLS = old if table else 0
    try:
        cs = cs_mod.CoordSet(coords.to(torch.int32), 1)
        kmap = cs.conv_map(k, s)
        out = cs.downsample(s)[0].coords if s > 1 else cs.coords
    finally:
        cs_mod._TABLE_MAX_CELLS = old
    got = set()
    for kk, i, o in kmap.pairs:
        if i is None:
            i = o = torch.arange(len(cs))
        got |= {(kk, a, b) for a, b in zip(i.tolist(), o.tolist(), strict=False)}
    index = {tuple(r): n for n, r in enumerate(coords.tolist())}
    want = set()
    for kk, d in enumerate(kernel_offsets(k).tolist()):
        for o, r in enumerate(out.tolist()):
            q = (r[0], r[1] + d[0], r[2] + d[1], r[3] + d[2])
            if q in index:
                want.add((kk, index[q], o))
    assert got == want


def test_stride_map_shared_with_transposed() -> None:
    coords = random_coords(100, 6)
    cs = cs_mod.CoordSet(coords.to(torch.int32), 1)
    coarse, inverse = cs.downsample(2)
    assert cs.downsample(2)[0] is coarse and coarse.parent is cs
    down = cs.conv_map(2, 2)
    up = coarse.transposed_map(cs, 2, 2)
    assert [(k, o.tolist(), i.tolist()) for k, i, o in up.pairs] == [
        (k, i.tolist(), o.tolist()) for k, i, o in down.pairs
    ]
    assert torch.equal(
        coarse.coords[inverse, 1:], torch.div(coords[:, 1:], 2, rounding_mode="floor").int() * 2
    )


def test_voxelize_devoxelize_and_pool() -> None:
    pts = torch.tensor(
        [[0.001, 0.0, 0.0], [0.015, 0.01, 0.019], [0.03, 0.0, 0.0], [-0.001, 0.0, 0.0]]
    )
    feats = torch.tensor([[1.0], [3.0], [5.0], [7.0]])
    batch = torch.tensor([0, 0, 0, 1])
    x, inverse = B.voxelize(pts, feats, 0.02, batch)
    assert x.C.tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [1, -1, 0, 0]]
    assert inverse.tolist() == [0, 0, 1, 2]
    assert x.F[:, 0].tolist() == [1.0, 5.0, 7.0]  # "first": the lowest point index per voxel
    xm, _ = B.voxelize(pts, feats, 0.02, batch, reduce="mean")
    assert xm.F[:, 0].tolist() == [2.0, 5.0, 7.0]
    assert B.devoxelize(xm, inverse)[:, 0].tolist() == [2.0, 2.0, 5.0, 7.0]
    assert B.global_max_pool(x)[:, 0].tolist() == [5.0, 7.0]
    with pytest.raises(ValueError, match="reduce"):
        B.voxelize(pts, feats, 0.02, reduce="median")
    with pytest.raises(ValueError, match="voxel_size_m"):
        voxelize_coordinates(pts, 0.0)


def test_make_tensor_validates_and_ops_need_one_coordinate_set() -> None:
    coords = random_coords(20, 4)
    with pytest.raises(ValueError, match="duplicate"):
        B.make_tensor(torch.cat([coords, coords[:1]]), torch.zeros(coords.shape[0] + 1, 1))
    with pytest.raises(ValueError, match="multiples"):
        B.make_tensor(coords + torch.tensor([0, 1, 0, 0]), torch.zeros(coords.shape[0], 1), 2)
    a = B.make_tensor(coords, torch.ones(coords.shape[0], 2))
    b = B.make_tensor(coords, torch.ones(coords.shape[0], 3))  # equal coordinates, other set
    assert B.cat(a, B.replace_features(a, torch.zeros(coords.shape[0], 1))).F.shape[1] == 3
    with pytest.raises(ValueError, match="coordinate sets"):
        B.cat(a, b)
    with pytest.raises(ValueError, match="coordinate sets"):
        B.add(a, b)


def test_get_backend_errors_name_the_config_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"model\.backbone3d\.backend.*minkowski, torch_native"):
        get_backend("spconv")
    from xmask3d_ros.model.sparse import minkowski

    minkowski.import_minkowski.cache_clear()
    monkeypatch.setitem(sys.modules, "MinkowskiEngine", None)  # import fails as if missing
    try:
        with pytest.raises(
            BackendUnavailableError, match=r"model\.backbone3d\.backend.*torch_native"
        ):
            get_backend("minkowski")
    finally:
        minkowski.import_minkowski.cache_clear()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    coords = random_coords(200, 8)
    feats = torch.randn(coords.shape[0], 4)
    conv = B.conv(4, 5, kernel_size=3)
    ref = conv(B.make_tensor(coords, feats)).F
    got = conv.cuda()(B.make_tensor(coords.cuda(), feats.cuda())).F
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-4, atol=1e-4)
