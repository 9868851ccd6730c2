"""MinkowskiEngine backend (the reference implementation; imported only when requested).

MinkowskiEngine 0.5.4 is built from source by ``scripts/build_minkowski.sh``. It imports
``collections.Sequence``, removed in Python 3.10; :func:`import_minkowski` restores the alias
first. Layers are ME's own modules, so their state dicts are ME's.
"""

from __future__ import annotations

import collections
import collections.abc
import functools
import warnings
from types import ModuleType
from typing import Any

import torch
from torch import nn

from xmask3d_ros.model.sparse.base import (
    BACKEND_CONFIG_KEY,
    BackendUnavailableError,
    SparseBackend,
)

__all__ = ["MinkowskiBackend", "import_minkowski"]


@functools.lru_cache(maxsize=1)
def import_minkowski() -> ModuleType:
    """Import MinkowskiEngine (with the Python >= 3.10 shim) or raise a config-level error."""
    if not hasattr(collections, "Sequence"):
        collections.Sequence = collections.abc.Sequence  # type: ignore[attr-defined]
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*CPU_ONLY.*")
            import MinkowskiEngine as ME
    except ImportError as err:
        raise BackendUnavailableError(
            f"{BACKEND_CONFIG_KEY}: 'minkowski' needs MinkowskiEngine, which failed to import "
            f"({err}); build it with scripts/build_minkowski.sh or set "
            f"{BACKEND_CONFIG_KEY}: torch_native (always available)"
        ) from err
    return ME  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=1)
def _transposed_conv_class() -> type:
    """ME's transposed conv with the interface's call signature (defined once ME is imported)."""
    base: Any = import_minkowski().MinkowskiConvolutionTranspose

    class MinkowskiTransposedConv(base):  # type: ignore[misc]
        """``forward(x, like)``: output on ``like``'s coordinate map (the skip tensor)."""

        def forward(self, x: Any, like: Any = None) -> Any:
            return super().forward(x, None if like is None else like.coordinate_map_key)

    return MinkowskiTransposedConv


class MinkowskiBackend(SparseBackend):
    """Layers and ops from MinkowskiEngine (CPU build or CUDA build, whichever is installed)."""

    name = "minkowski"

    def __init__(self) -> None:
        import_minkowski()  # fail now, with the config key, if ME is missing

    @property
    def ME(self) -> ModuleType:
        return import_minkowski()

    def make_tensor(self, coords: torch.Tensor, feats: torch.Tensor, tensor_stride: int = 1) -> Any:
        coords = coords.to(dtype=torch.int32, device=feats.device)
        return self.ME.SparseTensor(
            feats, coordinates=coords, tensor_stride=tensor_stride, device=feats.device
        )

    def tensor_stride(self, x: Any) -> int:
        return int(x.tensor_stride[0])

    def replace_features(self, x: Any, feats: torch.Tensor) -> Any:
        return self.ME.SparseTensor(
            feats, coordinate_map_key=x.coordinate_map_key, coordinate_manager=x.coordinate_manager
        )

    def conv(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        bias: bool = False,
    ) -> nn.Module:
        conv: nn.Module = self.ME.MinkowskiConvolution(
            in_channels,
            out_channels,
            kernel_size=kernel_size,
            stride=stride,
            bias=bias,
            dimension=3,
        )
        return conv

    def conv_transpose(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 2,
        stride: int = 2,
        *,
        bias: bool = False,
    ) -> nn.Module:
        up: nn.Module = _transposed_conv_class()(
            in_channels,
            out_channels,
            kernel_size=kernel_size,
            stride=stride,
            bias=bias,
            dimension=3,
        )
        return up

    def batch_norm(self, channels: int, momentum: float = 0.1) -> nn.Module:
        bn: nn.Module = self.ME.MinkowskiBatchNorm(channels, momentum=momentum)
        return bn

    def relu(self) -> nn.Module:
        relu: nn.Module = self.ME.MinkowskiReLU()
        return relu

    def cat(self, *tensors: Any) -> Any:
        return self.ME.cat(*tensors)

    def add(self, a: Any, b: Any) -> Any:
        return a + b
