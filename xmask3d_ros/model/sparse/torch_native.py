"""Pure-PyTorch sparse convolution: the portable backend (CPU, CUDA, Jetson; no extension).

Same semantics, parameter names and shapes as MinkowskiEngine 0.5.4 (see ``base.py``), so a
checkpoint loads into either backend unchanged. Coordinates and kernel maps live in
``coord_set.py``; a conv is gather -> GEMM -> scatter-add per kernel offset, in a custom
autograd function that saves only the input features (not K^3 gathered copies) for backward.
Plain tensor ops throughout, so it runs on any device and supports autograd.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from xmask3d_ros.model.sparse.base import SparseBackend
from xmask3d_ros.model.sparse.coord_set import CoordSet, KernelMap
from xmask3d_ros.model.sparse.coords import unique_coordinates

__all__ = ["SparseTensor", "TorchNativeBackend", "sparse_conv"]


class _SparseConvFn(torch.autograd.Function):
    """Gather -> GEMM -> scatter-add over the kernel offsets of a :class:`KernelMap`."""

    @staticmethod
    def forward(
        ctx: Any, feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap
    ) -> torch.Tensor:
        out = feats.new_zeros(kmap.n_out, kernel.shape[-1])
        for k, i, o in kmap.pairs:
            if i is None or o is None:
                out.add_(feats @ kernel[k])
            else:
                out.index_add_(0, o, feats.index_select(0, i) @ kernel[k])
        ctx.save_for_backward(feats, kernel)
        ctx.kmap = kmap
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        feats, kernel = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        need_f, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_f = torch.zeros_like(feats) if need_f else None
        grad_k = torch.zeros_like(kernel) if need_k else None
        for k, i, o in ctx.kmap.pairs:
            ident = i is None or o is None
            g = grad_out if ident else grad_out.index_select(0, o)
            if grad_f is not None:
                d = g @ kernel[k].t()
                if ident:
                    grad_f.add_(d)
                else:
                    grad_f.index_add_(0, i, d)
            if grad_k is not None:
                x = feats if ident else feats.index_select(0, i)
                grad_k[k] = x.t() @ g
        return grad_f, grad_k, None


def sparse_conv(feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """(N_out, C_out) = sum_k scatter(gather(feats) @ kernel[k]); kernel (K^3, C_in, C_out)."""
    if not kmap.pairs:
        return feats.new_zeros(kmap.n_out, kernel.shape[-1]) + 0 * kernel.sum()
    out: torch.Tensor = _SparseConvFn.apply(  # type: ignore[no-untyped-call]
        feats, kernel.to(feats.dtype), kmap
    )
    return out


class SparseTensor:
    """Features (N, C) on a :class:`CoordSet`; ``F``, ``C`` and ``tensor_stride`` as in ME."""

    __slots__ = ("F", "coord_set")

    def __init__(self, feats: torch.Tensor, coord_set: CoordSet) -> None:
        self.F = feats
        self.coord_set = coord_set

    @property
    def C(self) -> torch.Tensor:
        return self.coord_set.coords

    @property
    def tensor_stride(self) -> int:
        return self.coord_set.stride

    def __repr__(self) -> str:
        return (
            f"SparseTensor(N={self.F.shape[0]}, C={self.F.shape[1]}, stride={self.tensor_stride})"
        )


class SparseConvolution(nn.Module):
    """Sparse (transposed) conv with ME's parameters: ``kernel`` and optional ``bias`` (1, C)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        bias: bool = False,
        transposed: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or stride < 1:
            raise ValueError(f"kernel_size {kernel_size} and stride {stride} must be >= 1")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.transposed = kernel_size, stride, transposed
        # ME keeps a 1x1x1 stride-1 kernel as a plain (C_in, C_out) matrix (its ``use_mm``).
        self.use_mm = kernel_size == 1 and stride == 1
        shape = (
            (in_channels, out_channels)
            if self.use_mm
            else (kernel_size**3, in_channels, out_channels)
        )
        self.kernel = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(1, out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ME's default: uniform(+-1/sqrt(fan)), fan = (C_out if transposed else C_in) * K^3."""
        fan = (self.out_channels if self.transposed else self.in_channels) * self.kernel_size**3
        bound = 1.0 / fan**0.5
        with torch.no_grad():
            self.kernel.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def forward(self, x: SparseTensor, like: SparseTensor | None = None) -> SparseTensor:
        cs = x.coord_set
        out_cs: CoordSet = cs
        if self.use_mm:
            out = x.F @ self.kernel.to(x.F.dtype)
        elif self.transposed:
            target = like.coord_set if like is not None else cs.parent
            if target is None or (like is None and target.stride * self.stride != cs.stride):
                target = cs.expanded(self.kernel_size, self.stride)  # as ME: all reachable
            out_cs = target  # transposed_map checks the strides
            kmap = cs.transposed_map(out_cs, self.kernel_size, self.stride)
            out = sparse_conv(x.F, self.kernel, kmap)
        else:
            out_cs = cs if self.stride == 1 else cs.downsample(self.stride)[0]
            out = sparse_conv(x.F, self.kernel, cs.conv_map(self.kernel_size, self.stride))
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return SparseTensor(out, out_cs)

    def extra_repr(self) -> str:
        kind = "transposed, " if self.transposed else ""
        return (
            f"{self.in_channels}, {self.out_channels}, {kind}kernel_size={self.kernel_size}, "
            f"stride={self.stride}, bias={self.bias is not None}"
        )


class SparseBatchNorm(nn.Module):
    """BatchNorm1d over the features; the submodule is called ``bn`` as in ME."""

    def __init__(self, channels: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(channels, momentum=momentum)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return SparseTensor(self.bn(x.F), x.coord_set)


class SparseReLU(nn.Module):
    """ReLU on the features."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        return SparseTensor(torch.relu(x.F), x.coord_set)


def _same_set(tensors: tuple[SparseTensor, ...], op: str) -> CoordSet:
    cs = tensors[0].coord_set
    for t in tensors[1:]:
        if t.coord_set is not cs:
            raise ValueError(
                f"{op}: the tensors live on different coordinate sets (strides "
                f"{[x.tensor_stride for x in tensors]}); {op} needs one shared set"
            )
    return cs


class TorchNativeBackend(SparseBackend):
    """Always-available backend: plain PyTorch ops, device-agnostic, autograd-capable."""

    name = "torch_native"

    def make_tensor(
        self, coords: torch.Tensor, feats: torch.Tensor, tensor_stride: int = 1
    ) -> SparseTensor:
        if coords.ndim != 2 or coords.shape[1] != 4 or coords.dtype.is_floating_point:
            raise ValueError(
                f"coords: expected (N, 4) integers, got {coords.dtype} {tuple(coords.shape)}"
            )
        if feats.ndim != 2 or feats.shape[0] != coords.shape[0]:
            raise ValueError(f"feats: expected ({coords.shape[0]}, C), got {tuple(feats.shape)}")
        coords = coords.to(device=feats.device, dtype=torch.int32)
        if coords.shape[0] and bool((coords[:, 1:] % tensor_stride).any()):
            raise ValueError(f"coords: not all multiples of tensor_stride={tensor_stride}")
        if coords.shape[0] and unique_coordinates(coords)[0].shape[0] != coords.shape[0]:
            raise ValueError("coords: duplicate coordinates; voxelize the points first")
        return SparseTensor(feats, CoordSet(coords, tensor_stride))

    def tensor_stride(self, x: SparseTensor) -> int:
        return x.tensor_stride

    def replace_features(self, x: SparseTensor, feats: torch.Tensor) -> SparseTensor:
        return SparseTensor(feats, x.coord_set)

    def conv(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        bias: bool = False,
    ) -> nn.Module:
        return SparseConvolution(in_channels, out_channels, kernel_size, stride, bias=bias)

    def conv_transpose(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 2,
        stride: int = 2,
        *,
        bias: bool = False,
    ) -> nn.Module:
        return SparseConvolution(
            in_channels, out_channels, kernel_size, stride, bias=bias, transposed=True
        )

    def batch_norm(self, channels: int, momentum: float = 0.1) -> nn.Module:
        return SparseBatchNorm(channels, momentum)

    def relu(self) -> nn.Module:
        return SparseReLU()

    def cat(self, *tensors: SparseTensor) -> SparseTensor:
        cs = _same_set(tensors, "cat")
        return SparseTensor(torch.cat([t.F for t in tensors], dim=1), cs)

    def add(self, a: SparseTensor, b: SparseTensor) -> SparseTensor:
        cs = _same_set((a, b), "add")
        return SparseTensor(a.F + b.F, cs)
