"""3D backbone configuration: the MinkUNet of the semantic branch and of the binary head.

``arch`` names a reference preset (reference-notes §1.1 and §1.10) whose ``planes`` and
``layers`` fill in when those are left empty; ``custom`` takes them from the config (the `tiny`
model). Defaults are the paper's semantic branch: MinkUNet34C, 3 -> 256 channels, 2 cm voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

from xmask3d_ros.config.schema import ConfigError, param

__all__ = ["ARCH_PRESETS", "Backbone3DCfg", "binary_backbone_cfg"]

# arch -> (layers, planes): BasicBlock counts and widths of the 8 UNet stages (4 down, 4 up).
ARCH_PRESETS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "MinkUNet34C": ((2, 3, 4, 6, 2, 2, 2, 2), (32, 64, 128, 256, 256, 128, 96, 96)),
    "MinkUNet18A": ((2, 2, 2, 2, 2, 2, 2, 2), (32, 64, 128, 256, 128, 128, 96, 96)),
}
_STAGES = 8


@dataclass(frozen=True)
class Backbone3DCfg:
    """A MinkUNet (BasicBlock, four stride-2 downs, four transposed ups with skips)."""

    arch: str = param(
        "MinkUNet34C",
        "preset filling planes/layers (MinkUNet34C: semantic branch, MinkUNet18A: binary head); "
        "custom: give planes and layers",
        choices=("MinkUNet34C", "MinkUNet18A", "custom"),
    )
    in_channels: int = param(3, "input feature channels (reference: RGB in [-1, 1])", ge=1)
    out_channels: int = param(256, "channels of the full-resolution output (reference: 256)", ge=1)
    planes: tuple[int, ...] = param((), "8 stage widths; empty = the arch preset's", ge=1)
    layers: tuple[int, ...] = param(
        (), "8 stage depths in BasicBlocks (each >= 1); empty = the arch preset's", ge=1
    )
    init_dim: int = param(32, "stem width (reference: 32)", ge=1)
    stem_kernel: int = param(5, "stem conv kernel size (reference: 5)", ge=1, le=9)
    final_bias: bool = param(
        False, "bias on the final 1x1 conv (XMask3D/OpenScene: none; ME's example: yes)"
    )
    backend: str = param(
        "torch_native",
        "sparse backend: torch_native (pure PyTorch, always available) or minkowski "
        "(MinkowskiEngine, scripts/build_minkowski.sh); same weights on both",
        choices=("torch_native", "minkowski"),
    )
    voxel_size_m: float = param(0.02, "voxel edge in metres (reference DATA.voxel_size)", gt=0)

    def __post_init__(self) -> None:
        preset = ARCH_PRESETS.get(self.arch)
        for name, idx in (("layers", 0), ("planes", 1)):
            value = getattr(self, name)
            if not value:
                if preset is None:
                    raise ConfigError(f"{name}: empty, but arch is custom; give {_STAGES} values")
                object.__setattr__(self, name, preset[idx])  # frozen: fill the preset once
            elif len(value) != _STAGES:
                raise ConfigError(f"{name}: {value} has {len(value)} entries, expected {_STAGES}")
            elif preset is not None and tuple(value) != preset[idx]:
                raise ConfigError(
                    f"{name}: {value} differs from {self.arch}'s {preset[idx]}; "
                    "set arch: custom for another width or depth"
                )
            if any(v < 1 for v in getattr(self, name)):
                raise ConfigError(f"{name}: {getattr(self, name)} must all be >= 1")


def binary_backbone_cfg() -> Backbone3DCfg:
    """The binary head's own network (reference-notes §1.10): MinkUNet18A, 256-d output."""
    return Backbone3DCfg(arch="MinkUNet18A")
