"""MinkUNet on the pure-PyTorch backend: layout, parameter counts, init, forward, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from xmask3d_ros.config.model_3d import ARCH_PRESETS, Backbone3DCfg, binary_backbone_cfg
from xmask3d_ros.config.schema import ConfigError, from_dict, to_dict
from xmask3d_ros.model.minkunet import MinkUNet, build_backbone3d, convert_state_dict
from xmask3d_ros.model.sparse import get_backend

NATIVE = get_backend("torch_native")
TINY = Backbone3DCfg(
    arch="custom",
    planes=(8, 8, 16, 16, 16, 8, 8, 8),
    layers=(1, 1, 1, 1, 1, 1, 1, 1),
    init_dim=8,
    out_channels=6,
)
# Counted by running MinkowskiEngine's own examples/minkunet.py (v0.5.4), in=3, out=256, whose
# final conv has a bias; XMask3D's copy drops that bias (256 fewer parameters).
ME_EXAMPLE_PARAMS = {"MinkUNet34C": 37_878_944, "MinkUNet18A": 15_516_064}


def analytic_parameter_count(cfg: Backbone3DCfg) -> int:
    """Sum over the UNet's convs (K^3 * C_in * C_out) and BNs (2 * C), written independently."""
    P, L, D0 = cfg.planes, cfg.layers, cfg.init_dim

    def block(a: int, p: int) -> int:
        return 27 * a * p + 27 * p * p + 4 * p + (a * p + 2 * p if a != p else 0)

    def stage(a: int, p: int, n: int) -> int:
        return block(a, p) + (n - 1) * block(p, p)

    total = cfg.stem_kernel**3 * cfg.in_channels * D0 + 2 * D0
    a = D0
    for i in range(4):
        total += 8 * a * a + 2 * a + stage(a, P[i], L[i])
        a = P[i]
    for j, skip in enumerate((P[2], P[1], P[0], D0)):
        total += 8 * a * P[4 + j] + 2 * P[4 + j] + stage(P[4 + j] + skip, P[4 + j], L[4 + j])
        a = P[4 + j]
    return total + P[7] * cfg.out_channels + (cfg.out_channels if cfg.final_bias else 0)


@pytest.mark.parametrize("arch", ["MinkUNet34C", "MinkUNet18A"])
def test_parameter_count_matches_minkowski_example(arch: str) -> None:
    for bias in (False, True):
        cfg = Backbone3DCfg(arch=arch, final_bias=bias)
        n = sum(p.numel() for p in MinkUNet(cfg, NATIVE).parameters())
        assert n == analytic_parameter_count(cfg)
        assert n == ME_EXAMPLE_PARAMS[arch] - (0 if bias else cfg.out_channels)


def test_state_dict_uses_reference_names() -> None:
    keys = MinkUNet(Backbone3DCfg(arch="MinkUNet18A"), NATIVE).state_dict()
    for key, shape in [
        ("conv0p1s1.kernel", (125, 3, 32)),
        ("conv1p1s2.kernel", (8, 32, 32)),
        ("block1.0.conv1.kernel", (27, 32, 32)),
        ("block1.0.norm1.bn.running_var", (32,)),
        ("block2.0.downsample.0.kernel", (32, 64)),  # ME keeps 1x1 stride-1 kernels 2-D
        ("block2.0.downsample.1.bn.weight", (64,)),
        ("convtr4p16s2.kernel", (8, 256, 128)),
        ("block5.0.conv1.kernel", (27, 128 + 128, 128)),
        ("block8.1.norm2.bn.bias", (96,)),
        ("final.kernel", (96, 256)),
    ]:
        assert tuple(keys[key].shape) == shape, key
    assert "final.bias" not in keys


def test_init_follows_reference() -> None:
    torch.manual_seed(0)
    net = MinkUNet(Backbone3DCfg(), NATIVE)
    k = net.block4[0].conv1.kernel  # (27, 256, 256): std sqrt(2 / (27 * 256))
    assert k.std().item() == pytest.approx(math.sqrt(2 / (27 * 256)), rel=0.02)
    f = net.final.kernel  # 2-D: ME's fan_out is size(0) = C_in = 96
    assert f.std().item() == pytest.approx(math.sqrt(2 / 96), rel=0.05)
    t = net.convtr4p16s2.kernel  # untouched: ME's uniform(+-1/sqrt(C_out * 8))
    assert t.abs().max().item() <= 1 / math.sqrt(256 * 8) + 1e-7
    assert torch.all(net.bn0.bn.weight == 1) and torch.all(net.bn0.bn.bias == 0)


def test_forward_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    net = build_backbone3d(TINY)
    pts = torch.rand(3000, 3) * torch.tensor([1.0, 1.0, 0.4])
    batch = (torch.arange(3000) >= 1500).long()
    x, inverse = net.voxelize(pts, torch.rand(3000, 3) * 2 - 1, batch)
    bottleneck, out = net(x)
    assert out.tensor_stride == 1 and torch.equal(out.C, x.C) and out.F.shape[1] == 6
    assert bottleneck.tensor_stride == 16 and bottleneck.F.shape[1] == TINY.planes[3]
    assert bool((bottleneck.C[:, 1:] % 16 == 0).all())
    pooled = NATIVE.global_max_pool(bottleneck)
    assert pooled.shape == (2, TINY.planes[3])
    loss = NATIVE.devoxelize(out, inverse).square().mean() + pooled.sum()
    loss.backward()
    missing = [k for k, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_convert_state_dict_reshapes_and_reports() -> None:
    net = MinkUNet(TINY, NATIVE)
    sd = {f"net3d.{k}": v for k, v in net.state_dict().items()}
    sd["net3d.final.kernel"] = sd["net3d.final.kernel"][None]  # (1, C_in, C_out) layout
    out = convert_state_dict(sd, net, prefix="net3d.")
    assert out["final.kernel"].shape == net.final.kernel.shape
    net.load_state_dict(out)
    bad = dict(net.state_dict())
    del bad["bn0.bn.weight"]
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(
        KeyError, match=r"missing \['bn0.bn.weight'\].*unexpected \['extra.weight'\]"
    ):
        convert_state_dict(bad, net)
    bad = dict(net.state_dict())
    bad["block1.0.conv1.kernel"] = torch.zeros(27, 8, 9)
    with pytest.raises(ValueError, match=r"block1\.0\.conv1\.kernel"):
        convert_state_dict(bad, net)


def test_config_presets_and_checks() -> None:
    cfg = Backbone3DCfg()
    assert (cfg.layers, cfg.planes) == ARCH_PRESETS["MinkUNet34C"]
    assert binary_backbone_cfg().planes == (32, 64, 128, 256, 128, 128, 96, 96)
    assert from_dict(Backbone3DCfg, to_dict(cfg)) == cfg
    assert from_dict(Backbone3DCfg, to_dict(TINY)) == TINY
    with pytest.raises(ConfigError, match="arch: custom"):
        from_dict(Backbone3DCfg, {"planes": [8] * 8})
    with pytest.raises(ConfigError, match="layers: empty"):
        from_dict(Backbone3DCfg, {"arch": "custom", "planes": [8] * 8})
    with pytest.raises(ConfigError, match="expected 8"):
        from_dict(Backbone3DCfg, {"arch": "custom", "planes": [8] * 7, "layers": [1] * 8})
    with pytest.raises(ConfigError, match="backend"):
        from_dict(Backbone3DCfg, {"backend": "spconv"})
