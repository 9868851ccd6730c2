"""MinkUNet (34C for the semantic branch, 18A for the binary head), written once for any backend.

Structure, module names and initialisation follow the reference (XMask3D's ``mink_unet.py``,
itself MinkowskiEngine's example; reference-notes §1.1, §1.10), so a state dict has the same
keys and shapes on both backends and as in the reference checkpoints:

    stem  conv0p1s1 (k=stem_kernel) -> bn0 -> relu                           = p1   (stride 1)
    down  conv{i}p{2^(i-1)}s2 (k=2, s=2) -> bn{i} -> relu -> block{i}        = b{i} (stride 2^i)
    up    convtr{j}p{..}s2 (k=2, s=2, onto the skip's coordinates) -> bntr{j} -> relu
          -> cat(up, skip) -> block{j+1}
    final 1x1 conv -> out_channels

``forward`` returns (bottleneck at stride 16, full-resolution output), as the reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from xmask3d_ros.config.model_3d import Backbone3DCfg
from xmask3d_ros.model.sparse import SparseBackend, get_backend

__all__ = ["BasicBlock", "MinkUNet", "build_backbone3d", "convert_state_dict"]


def _kaiming_normal_like_me(kernel: torch.Tensor) -> None:
    """ME's ``utils.kaiming_normal_(mode="fan_out", nonlinearity="relu")`` on a sparse kernel.

    fan_out = K^3 * C_out for (K^3, C_in, C_out); for a 2-D (C_in, C_out) kernel ME uses the
    Linear convention, so fan_out = size(0) = C_in (a reference quirk, kept for parity).
    """
    fan = kernel.shape[0] if kernel.dim() == 2 else kernel.shape[0] * kernel.shape[2]
    with torch.no_grad():
        kernel.normal_(0.0, math.sqrt(2.0) / math.sqrt(fan))


class BasicBlock(nn.Module):
    """Two 3x3x3 convs with BN, residual (optionally through a 1x1 conv + BN), ReLU."""

    expansion = 1

    def __init__(
        self,
        backend: SparseBackend,
        inplanes: int,
        planes: int,
        downsample: nn.Module | None = None,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.conv1 = backend.conv(inplanes, planes, kernel_size=3)
        self.norm1 = backend.batch_norm(planes, bn_momentum)
        self.conv2 = backend.conv(planes, planes, kernel_size=3)
        self.norm2 = backend.batch_norm(planes, bn_momentum)
        self.relu = backend.relu()
        self.downsample = downsample

    def forward(self, x: Any) -> Any:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.backend.add(out, residual))


class MinkUNet(nn.Module):
    """Sparse residual UNet; ``forward(x) -> (bottleneck (stride 16), output (stride 1))``."""

    def __init__(self, cfg: Backbone3DCfg, backend: SparseBackend | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.backend = backend if backend is not None else get_backend(cfg.backend)
        b, planes, layers = self.backend, cfg.planes, cfg.layers
        self._transposed: list[nn.Module] = []  # kept with ME's default init (reference)
        self.inplanes = cfg.init_dim

        self.conv0p1s1 = b.conv(cfg.in_channels, cfg.init_dim, kernel_size=cfg.stem_kernel)
        self.bn0 = b.batch_norm(cfg.init_dim)
        for i, name in enumerate(("conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2")):
            setattr(self, name, b.conv(self.inplanes, self.inplanes, kernel_size=2, stride=2))
            setattr(self, f"bn{i + 1}", b.batch_norm(self.inplanes))
            setattr(self, f"block{i + 1}", self._make_layer(planes[i], layers[i]))
        skips = (planes[2], planes[1], planes[0], cfg.init_dim)
        for j, name in enumerate(("convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2")):
            up = b.conv_transpose(self.inplanes, planes[4 + j], kernel_size=2, stride=2)
            self._transposed.append(up)
            setattr(self, name, up)
            setattr(self, f"bntr{4 + j}", b.batch_norm(planes[4 + j]))
            self.inplanes = planes[4 + j] * BasicBlock.expansion + skips[j]
            setattr(self, f"block{5 + j}", self._make_layer(planes[4 + j], layers[4 + j]))
        self.final = b.conv(
            planes[7] * BasicBlock.expansion, cfg.out_channels, kernel_size=1, bias=cfg.final_bias
        )
        self.relu = b.relu()
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        downsample = None
        if self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                self.backend.conv(self.inplanes, planes * BasicBlock.expansion, kernel_size=1),
                self.backend.batch_norm(planes * BasicBlock.expansion),
            )
        stage = [BasicBlock(self.backend, self.inplanes, planes, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        stage += [BasicBlock(self.backend, self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def _init_weights(self) -> None:
        """Kaiming normal on conv kernels, BN weight 1 / bias 0; transposed convs untouched."""
        transposed = {id(m) for m in self._transposed}
        for m in self.modules():
            kernel = getattr(m, "kernel", None)
            if isinstance(kernel, torch.Tensor) and id(m) not in transposed:
                _kaiming_normal_like_me(kernel)
            bn = getattr(m, "bn", None)
            if isinstance(bn, nn.BatchNorm1d):
                nn.init.constant_(bn.weight, 1.0)
                nn.init.constant_(bn.bias, 0.0)

    def voxelize(
        self, points: torch.Tensor, feats: torch.Tensor, batch: torch.Tensor | None = None
    ) -> tuple[Any, torch.Tensor]:
        """(N, 3) metres + (N, in_channels) -> input tensor at ``cfg.voxel_size_m`` and the
        (N,) point -> voxel map (for ``backend.devoxelize``)."""
        return self.backend.voxelize(points, feats, self.cfg.voxel_size_m, batch)

    def forward(self, x: Any) -> tuple[Any, Any]:
        """``x``: backend sparse tensor at stride 1 with ``in_channels`` features."""
        out_p1 = self.relu(self.bn0(self.conv0p1s1(x)))
        skips = [out_p1]
        out = out_p1
        for i, name in enumerate(("conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2")):
            out = self.relu(getattr(self, f"bn{i + 1}")(getattr(self, name)(out)))
            out = getattr(self, f"block{i + 1}")(out)
            skips.append(out)
        bottleneck = skips.pop()  # stride 16
        for j, name in enumerate(("convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2")):
            skip = skips.pop()
            out = self.relu(getattr(self, f"bntr{4 + j}")(getattr(self, name)(out, skip)))
            out = getattr(self, f"block{5 + j}")(self.backend.cat(out, skip))
        return bottleneck, self.final(out)


def build_backbone3d(cfg: Backbone3DCfg, backend: SparseBackend | None = None) -> MinkUNet:
    """The MinkUNet of ``cfg`` on ``cfg.backend`` (or the given backend instance)."""
    return MinkUNet(cfg, backend)


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module, *, prefix: str = ""
) -> dict[str, torch.Tensor]:
    """A state dict for ``model`` from a MinkUNet checkpoint of either backend (or the reference).

    Both backends use ME's parameter names and layouts (``kernel`` (K^3, C_in, C_out),
    ``bias`` (1, C_out), ``bn.*``), so the mapping is by name; kernels whose layout differs only
    by a unit kernel-volume axis ((C_in, C_out) vs (1, C_in, C_out), ME's ``use_mm`` case) are
    reshaped. ``prefix`` selects a sub-module of a larger checkpoint (e.g. ``"net3d."``).
    Raises KeyError listing missing/unexpected keys and ValueError on a shape mismatch.
    """
    src = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    target = model.state_dict()
    missing = sorted(set(target) - set(src))
    unexpected = sorted(set(src) - set(target))
    if missing or unexpected:
        raise KeyError(
            f"checkpoint does not match the model: missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''}"
        )
    out: dict[str, torch.Tensor] = {}
    for key, ref in target.items():
        value = src[key]
        if value.shape != ref.shape:
            squeezed = [d for d in value.shape if d != 1] == [d for d in ref.shape if d != 1]
            if not (key.endswith("kernel") and squeezed and value.numel() == ref.numel()):
                raise ValueError(
                    f"{key}: checkpoint shape {tuple(value.shape)} != model {tuple(ref.shape)}"
                )
            value = value.reshape(ref.shape)
        out[key] = value.to(dtype=ref.dtype)
    return out
