"""Both backends against each other, and against a UNet built directly from MinkowskiEngine layers.

Skipped when MinkowskiEngine does not import (build it with scripts/build_minkowski.sh).
"""

from __future__ import annotations

import collections
import collections.abc

import pytest
import torch
from torch import nn

if not hasattr(collections, "Sequence"):  # ME 0.5.4 on Python >= 3.10
    collections.Sequence = collections.abc.Sequence  # type: ignore[attr-defined]
ME = pytest.importorskip("MinkowskiEngine")

from xmask3d_ros.config.model_3d import Backbone3DCfg  # noqa: E402
from xmask3d_ros.model.minkunet import MinkUNet, convert_state_dict  # noqa: E402
from xmask3d_ros.model.sparse import get_backend  # noqa: E402

pytestmark = [
    pytest.mark.minkowski,
    pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning"),
]
NATIVE, MINK = get_backend("torch_native"), get_backend("minkowski")
DT = torch.float64
NARROW = Backbone3DCfg(
    arch="custom",
    planes=(8, 12, 16, 16, 12, 12, 8, 8),
    layers=(1, 2, 1, 1, 1, 1, 1, 2),
    init_dim=8,
    out_channels=5,
)


def random_coords(n: int, grid: int, t: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.cat(
        [
            torch.randint(0, 2, (n, 1), generator=g),
            torch.randint(-grid, grid, (n, 3), generator=g) * t,
        ],
        1,
    )
    return torch.unique(c, dim=0)


def rows_like(ref_coords: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Permutation putting ``coords`` rows in ``ref_coords`` order (both sets must be equal)."""
    index = {tuple(r): i for i, r in enumerate(coords.tolist())}
    assert len(index) == len(ref_coords)
    return torch.tensor([index[tuple(r)] for r in ref_coords.tolist()])


def twin(make):
    """The same layer on both backends with identical parameters."""
    a, b = make(NATIVE).to(DT), make(MINK).to(DT)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("t", [1, 2])
@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_conv_matches_minkowski(k: int, s: int, t: int) -> None:
    coords = random_coords(200, 5, t, seed=k + 3 * s + t)
    base = torch.randn(coords.shape[0], 3, dtype=DT)
    fa, fb = base.clone().requires_grad_(), base.clone().requires_grad_()
    ca, cb = twin(lambda be: be.conv(3, 4, kernel_size=k, stride=s))
    ya = ca(NATIVE.make_tensor(coords, fa, t))
    yb = cb(MINK.make_tensor(coords, fb, t))
    perm = rows_like(ya.C, yb.C)
    assert torch.equal(ya.C, yb.C[perm]) and MINK.tensor_stride(yb) == ya.tensor_stride
    torch.testing.assert_close(ya.F, yb.F[perm])
    w = torch.randn_like(ya.F)
    (ya.F * w).sum().backward()
    (yb.F[perm] * w).sum().backward()
    torch.testing.assert_close(fa.grad, fb.grad)
    torch.testing.assert_close(ca.kernel.grad, cb.kernel.grad)


@pytest.mark.parametrize("k", [2, 3])
def test_transposed_conv_matches_minkowski(k: int) -> None:
    coords = random_coords(200, 5, seed=k)
    feats = torch.randn(coords.shape[0], 3, dtype=DT)
    down_a, down_b = twin(lambda be: be.conv(3, 3, kernel_size=2, stride=2))
    up_a, up_b = twin(lambda be: be.conv_transpose(3, 4, kernel_size=k, stride=2))
    xa, xb = NATIVE.make_tensor(coords, feats), MINK.make_tensor(coords, feats)
    ya, yb = up_a(down_a(xa), xa), up_b(down_b(xb), xb)
    perm = rows_like(ya.C, yb.C)
    torch.testing.assert_close(ya.F, yb.F[perm])
    w = torch.randn_like(ya.F)
    (ya.F * w).sum().backward()
    (yb.F[perm] * w).sum().backward()
    for pa, pb in zip(
        list(down_a.parameters()) + list(up_a.parameters()),
        list(down_b.parameters()) + list(up_b.parameters()),
        strict=False,
    ):
        torch.testing.assert_close(pa.grad, pb.grad)


class ReferenceMinkUNet(nn.Module):
    """MinkowskiEngine's examples/minkunet.py layout built from ME layers and ME's BasicBlock
    (final conv without bias, as XMask3D); an independent twin of ``MinkUNet``."""

    def __init__(self, cfg: Backbone3DCfg) -> None:
        super().__init__()
        from MinkowskiEngine.modules.resnet_block import BasicBlock

        P, L, D = cfg.planes, cfg.layers, 3
        self.inplanes = cfg.init_dim

        def layer(planes: int, blocks: int) -> nn.Sequential:
            down = None
            if self.inplanes != planes:
                down = nn.Sequential(
                    ME.MinkowskiConvolution(self.inplanes, planes, kernel_size=1, dimension=D),
                    ME.MinkowskiBatchNorm(planes),
                )
            mods = [BasicBlock(self.inplanes, planes, downsample=down, dimension=D)]
            self.inplanes = planes
            return nn.Sequential(
                *mods, *[BasicBlock(planes, planes, dimension=D) for _ in range(blocks - 1)]
            )

        self.conv0p1s1 = ME.MinkowskiConvolution(
            cfg.in_channels, cfg.init_dim, kernel_size=cfg.stem_kernel, dimension=D
        )
        self.bn0 = ME.MinkowskiBatchNorm(cfg.init_dim)
        for i, n in enumerate(["conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2"]):
            setattr(
                self,
                n,
                ME.MinkowskiConvolution(
                    self.inplanes, self.inplanes, kernel_size=2, stride=2, dimension=D
                ),
            )
            setattr(self, f"bn{i + 1}", ME.MinkowskiBatchNorm(self.inplanes))
            setattr(self, f"block{i + 1}", layer(P[i], L[i]))
        skip = [P[2], P[1], P[0], cfg.init_dim]
        for j, n in enumerate(["convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2"]):
            setattr(
                self,
                n,
                ME.MinkowskiConvolutionTranspose(
                    self.inplanes, P[4 + j], kernel_size=2, stride=2, dimension=D
                ),
            )
            setattr(self, f"bntr{4 + j}", ME.MinkowskiBatchNorm(P[4 + j]))
            self.inplanes = P[4 + j] + skip[j]
            setattr(self, f"block{5 + j}", layer(P[4 + j], L[4 + j]))
        self.final = ME.MinkowskiConvolution(
            P[7], cfg.out_channels, kernel_size=1, bias=cfg.final_bias, dimension=D
        )
        self.relu = ME.MinkowskiReLU(inplace=True)

    def forward(self, x):
        out_p1 = self.relu(self.bn0(self.conv0p1s1(x)))
        out = self.block1(self.relu(self.bn1(self.conv1p1s2(out_p1))))
        out_b1p2 = out
        out_b2p4 = self.block2(self.relu(self.bn2(self.conv2p2s2(out_b1p2))))
        out_b3p8 = self.block3(self.relu(self.bn3(self.conv3p4s2(out_b2p4))))
        bottleneck = self.block4(self.relu(self.bn4(self.conv4p8s2(out_b3p8))))
        out = self.block5(ME.cat(self.relu(self.bntr4(self.convtr4p16s2(bottleneck))), out_b3p8))
        out = self.block6(ME.cat(self.relu(self.bntr5(self.convtr5p8s2(out))), out_b2p4))
        out = self.block7(ME.cat(self.relu(self.bntr6(self.convtr6p4s2(out))), out_b1p2))
        out = self.block8(ME.cat(self.relu(self.bntr7(self.convtr7p2s2(out))), out_p1))
        return bottleneck, self.final(out)


def scene(n: int = 2500, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(n, 3, generator=g) * torch.tensor([0.8, 0.8, 0.3])
    return (
        pts,
        torch.rand(n, 3, generator=g, dtype=DT) * 2 - 1,
        torch.randint(0, 2, (n,), generator=g),
    )


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_minkunet_same_outputs_and_gradients_on_both_backends_and_reference(mode: str) -> None:
    torch.manual_seed(0)
    native = MinkUNet(NARROW, NATIVE).to(DT)
    mink = MinkUNet(NARROW, MINK).to(DT)
    ref = ReferenceMinkUNet(NARROW).to(DT)
    sd = native.state_dict()
    if mode == "eval":  # non-trivial running statistics
        sd = {k: (v + torch.rand_like(v) if "running" in k else v) for k, v in sd.items()}
        native.load_state_dict(sd)
    mink.load_state_dict(convert_state_dict(sd, mink))
    ref.load_state_dict(sd)  # the reference layout has exactly our keys and shapes
    pts, feats, batch = scene()
    outs = []
    for model, be in ((native, NATIVE), (mink, MINK), (ref, MINK)):
        getattr(model, mode)()
        x, inverse = be.voxelize(pts, feats, 0.02, batch)
        bottleneck, out = model(x)
        per_point = be.devoxelize(out, inverse)
        (per_point.square().sum() + bottleneck.F.sum()).backward()
        grads = {k: p.grad for k, p in model.named_parameters()}
        outs.append((bottleneck, per_point, grads))
    (b0, o0, g0) = outs[0]
    assert b0.tensor_stride == 16 and b0.F.shape[1] == NARROW.planes[3]
    for b1, o1, g1 in outs[1:]:
        torch.testing.assert_close(o0, o1)
        perm = rows_like(b0.C, b1.C)
        torch.testing.assert_close(b0.F, b1.F[perm])
        assert g0.keys() == g1.keys()
        for k in g0:
            torch.testing.assert_close(g0[k], g1[k], msg=k)


def test_checkpoint_converts_both_ways() -> None:
    torch.manual_seed(1)
    native, mink = MinkUNet(NARROW, NATIVE).eval(), MinkUNet(NARROW, MINK).eval()
    pts, feats, batch = scene(seed=3)
    feats = feats.float()
    mink.load_state_dict(convert_state_dict(native.state_dict(), mink))
    xa, inv = NATIVE.voxelize(pts, feats, 0.02, batch)
    xb, _ = MINK.voxelize(pts, feats, 0.02, batch)
    with torch.no_grad():
        torch.testing.assert_close(
            NATIVE.devoxelize(native(xa)[1], inv), MINK.devoxelize(mink(xb)[1], inv)
        )
    torch.manual_seed(2)
    mink2 = MinkUNet(NARROW, MINK).eval()
    native.load_state_dict(convert_state_dict(mink2.state_dict(), native))
    with torch.no_grad():
        torch.testing.assert_close(
            NATIVE.devoxelize(native(xa)[1], inv), MINK.devoxelize(mink2(xb)[1], inv)
        )


@pytest.mark.parametrize("arch", ["MinkUNet34C", "MinkUNet18A"])
def test_parameter_layout_equals_minkowski_built_network(arch: str) -> None:
    """Full-size networks: the ME-built reference and ours have identical keys and shapes."""
    cfg = Backbone3DCfg(arch=arch)
    ours = {k: tuple(v.shape) for k, v in MinkUNet(cfg, NATIVE).state_dict().items()}
    ref_model = ReferenceMinkUNet(cfg)
    ref = {k: tuple(v.shape) for k, v in ref_model.state_dict().items()}
    assert ours == ref
    assert sum(p.numel() for p in MinkUNet(cfg, MINK).parameters()) == sum(
        p.numel() for p in ref_model.parameters()
    )
