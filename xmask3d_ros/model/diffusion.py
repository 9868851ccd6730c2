"""Frozen Stable Diffusion v1 UNet + VAE as a one-step feature extractor (reference-notes §1.5).

One pass, as ODISE's ``LdmExtractor`` / ``FeatureExtractorBackbone`` used by XMask3D:

1. image in [0, 1] -> [-1, 1] -> VAE encoder; latent = posterior mean x scaling factor (0.18215);
2. ``q_sample`` at the configured timestep (reference t = 0) with a fixed noise tensor drawn once
   from ``noise_seed`` (42) -- deterministic, no sampling loop;
3. one UNet pass conditioned on the captioner's context (B, 77, 768), with the captioner's extra
   time embedding added to the UNet's own one;
4. the VAE decoder on the clean latent, only as far as its second tap.

Taps are the *inputs* of these blocks (after the skip concatenation), captured by forward
pre-hooks on the diffusers modules (LDM index -> diffusers block in brackets):

    VAE encoder blocks 5, 7  [encoder.down_blocks.{2,3}.resnets.1]  512 ch, stride 4, 8
    UNet output blocks 2, 5, 8, 11 [up_blocks.{0,1,2,3}.resnets.2]  2560 / 1920 / 960 / 640 ch,
                                                 stride 64 (clamped to 32) / 32 / 16 / 8
    VAE decoder blocks 2, 5  [decoder.up_blocks.{0,1}.resnets.2]   512 ch, stride 8, 4

Each tap is resized (nearest) to image/stride with the stride clamped to [4, 32], projected by one
detectron2 ResNet bottleneck block (GroupNorm) to ``feature_dim`` (512), and taps of equal stride
are summed: ``s2`` (4), ``s3`` (8), ``s4`` (16), ``s5`` (32).

UNet and VAE are frozen (requires_grad False, always in eval mode, outside the optimiser and
outside project checkpoints); gradients still flow *through* the UNet to the captioner's context.
The VAE part runs under ``no_grad`` since nothing trainable feeds it. Differences from the
reference: passes stop once their last tap is captured (the reference runs the full VAE decoder
and UNet; the outputs used are identical), and ``diffusers`` replaces the ``ldm`` package.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as torch_checkpoint
from torch import nn

from xmask3d_ros.config.model import DiffusionCfg
from xmask3d_ros.config.schema import ConfigError
from xmask3d_ros.model.errors import WeightsError  # re-exported: its home is errors.py
from xmask3d_ros.model.pixel_decoder import ConvNorm, group_norm

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, UNet2DConditionModel

__all__ = [
    "FEATURE_NAMES",
    "SD_V1_UNET_CONFIG",
    "SD_V1_VAE_CONFIG",
    "TAPS",
    "BottleneckBlock",
    "DiffusionFeatureExtractor",
    "Tap",
    "WeightsError",
    "build_unet",
    "build_vae",
    "check_local_weights",
]


# Stable Diffusion v1.x layout (CompVis/stable-diffusion v1-inference.yaml in diffusers terms).
# ``attention_head_dim`` is diffusers' legacy name for the number of heads (8).
SD_V1_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}
SD_V1_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
_WEIGHTS_HINT = (
    "a Stable Diffusion v1.x model in diffusers format (the '{sub}/' folder with config.json and "
    "diffusion_pytorch_model.safetensors), e.g. converted offline from sd-v1-3.ckpt with "
    "diffusers' scripts/convert_original_stable_diffusion_to_diffusers.py; nothing is downloaded"
)


@dataclass(frozen=True)
class Tap:
    """One feature tap: the input of ``module`` inside the UNet or the VAE."""

    name: str  # reference name: LDM block list and index
    part: str  # "unet" or "vae"
    module: str  # dotted path inside that part (diffusers module names)
    stride: int  # image pixels per feature pixel (before clamping to [4, 32])


TAPS: tuple[Tap, ...] = (
    Tap("vae_encoder.5", "vae", "encoder.down_blocks.2.resnets.1", 4),
    Tap("vae_encoder.7", "vae", "encoder.down_blocks.3.resnets.1", 8),
    Tap("unet_output.2", "unet", "up_blocks.0.resnets.2", 64),
    Tap("unet_output.5", "unet", "up_blocks.1.resnets.2", 32),
    Tap("unet_output.8", "unet", "up_blocks.2.resnets.2", 16),
    Tap("unet_output.11", "unet", "up_blocks.3.resnets.2", 8),
    Tap("vae_decoder.2", "vae", "decoder.up_blocks.0.resnets.2", 8),
    Tap("vae_decoder.5", "vae", "decoder.up_blocks.1.resnets.2", 4),
)
MIN_STRIDE, MAX_STRIDE = 4, 32
FEATURE_NAMES: tuple[str, ...] = ("s2", "s3", "s4", "s5")  # strides 4, 8, 16, 32


def _clamped(stride: int) -> int:
    return min(max(stride, MIN_STRIDE), MAX_STRIDE)


def _import_diffusers() -> Any:
    from xmask3d_ros.model.compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    import diffusers

    return diffusers


def _local_folder(path: str, key: str, sub: str) -> Path:
    """Check a diffusers folder before anything is built; errors name path, key and origin."""
    folder = Path(path).expanduser()
    hint = _WEIGHTS_HINT.format(sub=sub)
    if not folder.is_dir():
        raise WeightsError(f"{key}: {folder} does not exist; expected {hint}")
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{key}: {folder} has no config.json; expected {hint}")
    if not any(folder.glob("*.safetensors")):
        raise WeightsError(f"{key}: {folder} has no .safetensors weights; expected {hint}")
    return folder


def check_local_weights(cfg: DiffusionCfg) -> None:
    """Fail fast (before building or loading anything) if a configured SD folder is unusable."""
    if cfg.unet_path:
        _local_folder(cfg.unet_path, "diffusion.unet_path", "unet")
    if cfg.vae_path:
        _local_folder(cfg.vae_path, "diffusion.vae_path", "vae")


def _check_layout(model: nn.Module, key: str, what: str, blocks: Mapping[str, int]) -> None:
    for attr, n_resnets in blocks.items():
        seq = model.get_submodule(attr)
        if len(seq) != 4 or any(len(b.resnets) != n_resnets for b in seq):  # type: ignore[arg-type]
            raise ConfigError(
                f"{key}: the {what} does not have Stable Diffusion v1's layout (4 levels, "
                f"{n_resnets} resnets per {attr} block); the feature taps need it"
            )


def build_unet(cfg: DiffusionCfg, *, cross_attention_dim: int) -> UNet2DConditionModel:
    """The frozen UNet: local diffusers weights, or random init in ``cfg.layout``."""
    diffusers = _import_diffusers()
    if cfg.unet_path:
        folder = _local_folder(cfg.unet_path, "diffusion.unet_path", "unet")
        unet = diffusers.UNet2DConditionModel.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True
        )
        _check_layout(unet, "diffusion.unet_path", "UNet", {"down_blocks": 2, "up_blocks": 3})
        if unet.config.cross_attention_dim != cross_attention_dim:
            raise ConfigError(
                f"captioner.cross_attention_dim: {cross_attention_dim} differs from the UNet's "
                f"cross_attention_dim={unet.config.cross_attention_dim} ({folder})"
            )
    else:
        config = dict(SD_V1_UNET_CONFIG, cross_attention_dim=cross_attention_dim)
        if cfg.layout == "tiny":
            config.update(
                sample_size=cfg.image_size // 8,
                block_out_channels=tuple(cfg.tiny_unet_channels),
                attention_head_dim=cfg.tiny_attention_heads,
                norm_num_groups=_common_groups(cfg.tiny_unet_channels),
            )
        unet = diffusers.UNet2DConditionModel(**config)
    return _freeze(unet)


def build_vae(cfg: DiffusionCfg) -> AutoencoderKL:
    """The frozen VAE: local diffusers weights, or random init in ``cfg.layout``."""
    diffusers = _import_diffusers()
    if cfg.vae_path:
        folder = _local_folder(cfg.vae_path, "diffusion.vae_path", "vae")
        vae = diffusers.AutoencoderKL.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True
        )
        _check_layout(
            vae, "diffusion.vae_path", "VAE", {"encoder.down_blocks": 2, "decoder.up_blocks": 3}
        )
    else:
        config = dict(SD_V1_VAE_CONFIG)
        if cfg.layout == "tiny":
            config.update(
                sample_size=cfg.image_size,
                block_out_channels=tuple(cfg.tiny_vae_channels),
                norm_num_groups=_common_groups(cfg.tiny_vae_channels),
            )
        vae = diffusers.AutoencoderKL(**config)
    return _freeze(vae)


def _common_groups(channels: tuple[int, ...], groups: int = 32) -> int:
    """GroupNorm groups that divide every width (32 for SD v1, as diffusers' default)."""
    for c in channels:
        groups = math.gcd(groups, c)
    return groups


def _freeze(model: Any) -> Any:
    model.requires_grad_(False)
    return model.eval()


def c2_msra_fill(conv: nn.Conv2d) -> None:
    """fvcore's ``c2_msra_fill``: kaiming normal (fan_out, relu), zero bias."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.constant_(conv.bias, 0.0)


class BottleneckBlock(nn.Module):
    """detectron2 ``BottleneckBlock`` (stride 1, GroupNorm): 1x1 -> 3x3 -> 1x1 + shortcut."""

    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int) -> None:
        super().__init__()
        self.shortcut = (
            ConvNorm(in_channels, out_channels, 1, bias=False, norm=group_norm(out_channels))
            if in_channels != out_channels
            else None
        )
        self.conv1 = ConvNorm(
            in_channels, bottleneck_channels, 1, bias=False, norm=group_norm(bottleneck_channels)
        )
        self.conv2 = ConvNorm(
            bottleneck_channels,
            bottleneck_channels,
            3,
            padding=1,
            bias=False,
            norm=group_norm(bottleneck_channels),
        )
        self.conv3 = ConvNorm(
            bottleneck_channels, out_channels, 1, bias=False, norm=group_norm(out_channels)
        )
        for conv in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if conv is not None:
                c2_msra_fill(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class _TapsDone(Exception):
    """Raised by a hook once every tap of a pass is captured, to skip the rest of the pass."""


@contextlib.contextmanager
def _capture_inputs(
    modules: Mapping[str, nn.Module], *, stop_when_done: bool
) -> Iterator[dict[str, torch.Tensor]]:
    store: dict[str, torch.Tensor] = {}

    def hook_for(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            store[name] = args[0]
            if stop_when_done and len(store) == len(modules):
                raise _TapsDone

        return hook

    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in modules.items()]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


class DiffusionFeatureExtractor(nn.Module):
    """``forward(image (B,3,S,S) in [0,1], context (B,T,D), time_cond (B,D_t) | None) -> {s2..s5}``.

    S = ``cfg.image_size``; ``s{k}`` is (B, feature_dim, S / 2^k, S / 2^k). ``unet`` and ``vae``
    are the frozen submodules; everything else (the projections) is trainable.
    """

    def __init__(self, cfg: DiffusionCfg, *, unet: nn.Module, vae: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.unet = _freeze(unet)
        self.vae = _freeze(vae)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.time_embed_dim = int(unet.time_embedding.linear_2.out_features)
        self.tap_channels = tuple(
            int((unet if t.part == "unet" else vae).get_submodule(t.module).in_channels)
            for t in TAPS
        )
        self.feature_projections = nn.ModuleList(
            nn.Sequential(BottleneckBlock(c, cfg.feature_dim, cfg.feature_dim // 4))
            for c in self.tap_channels
        )
        # q_sample coefficients of SD's "ldm_linear" schedule (1000 steps), in float64 as ODISE
        betas = (
            torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64, device="cpu") ** 2
        )
        alpha_bar = torch.cumprod(1.0 - betas, 0)[cfg.timestep]
        self.signal_scale = float(alpha_bar.sqrt())
        self.noise_scale = float((1.0 - alpha_bar).sqrt())
        latent = cfg.image_size // 8
        gen = torch.Generator(device="cpu").manual_seed(cfg.noise_seed)
        noise = torch.randn(
            1, int(vae.config.latent_channels), latent, latent, generator=gen, device="cpu"
        )
        self.register_buffer("shared_noise", noise, persistent=False)  # a function of the config

    def train(self, mode: bool = True) -> DiffusionFeatureExtractor:
        super().train(mode)
        self.unet.eval()
        self.vae.eval()
        return self

    def _modules_of(self, part: str, names: set[str] | None = None) -> dict[str, nn.Module]:
        owner = self.unet if part == "unet" else self.vae
        return {
            t.name: owner.get_submodule(t.module)
            for t in TAPS
            if t.part == part and (names is None or t.name in names)
        }

    @torch.no_grad()
    def _vae_taps(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        vae: Any = self.vae
        with _capture_inputs(
            self._modules_of("vae", {"vae_encoder.5", "vae_encoder.7"}), stop_when_done=False
        ) as enc:
            mean = vae.encode(x).latent_dist.mean  # deterministic: posterior mean, as ODISE
        dec_names = {"vae_decoder.2", "vae_decoder.5"}
        with _capture_inputs(self._modules_of("vae", dec_names), stop_when_done=True) as dec:
            z = mean if vae.post_quant_conv is None else vae.post_quant_conv(mean)
            with contextlib.suppress(_TapsDone):
                vae.decoder(z)
        return {**enc, **dec}, mean

    def _unet_taps(
        self, latent: torch.Tensor, context: torch.Tensor, time_cond: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        unet: Any = self.unet
        b = latent.shape[0]
        noise = self.shared_noise.to(latent).expand_as(latent)
        noisy = self.signal_scale * latent + self.noise_scale * noise
        timesteps = torch.full((b,), self.cfg.timestep, device=latent.device, dtype=torch.long)
        handle = None
        if time_cond is not None:
            # the captioner's embedding is added to the UNet's own timestep embedding (ODISE)
            handle = unet.time_embedding.register_forward_hook(
                lambda _m, _a, out: out + time_cond.to(out.dtype)
            )
        try:
            with (
                _capture_inputs(self._modules_of("unet"), stop_when_done=True) as taps,
                contextlib.suppress(_TapsDone),
            ):
                unet(noisy, timesteps, encoder_hidden_states=context.to(noisy.dtype))
        finally:
            if handle is not None:
                handle.remove()
        return taps

    def _project(self, size: tuple[int, int], *feats: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out: dict[int, torch.Tensor] = {}
        for tap, feat, proj in zip(TAPS, feats, self.feature_projections, strict=True):
            stride = _clamped(tap.stride)
            target = (size[0] // stride, size[1] // stride)
            if tuple(feat.shape[-2:]) != target:  # only the stride-64 UNet tap (ODISE: nearest)
                feat = F.interpolate(feat, size=target)
            y = proj(feat)
            out[stride] = y if stride not in out else out[stride] + y
        return tuple(out[s] for s in sorted(out))

    def forward(
        self, image: torch.Tensor, context: torch.Tensor, time_cond: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        size = (int(image.shape[-2]), int(image.shape[-1]))
        dtype = next(self.feature_projections.parameters()).dtype
        vae_feats, mean = self._vae_taps(image.to(dtype) * 2.0 - 1.0)
        unet_feats = self._unet_taps(mean * self.scaling_factor, context, time_cond)
        taps = {**vae_feats, **unet_feats}
        feats = [taps[t.name] for t in TAPS]
        for tap, feat in zip(TAPS, feats, strict=True):
            expect = (size[0] // tap.stride, size[1] // tap.stride)
            if tuple(feat.shape[-2:]) != expect:
                raise RuntimeError(
                    f"tap {tap.name} has spatial size {tuple(feat.shape[-2:])}, expected {expect} "
                    f"for a {size} image (is the UNet/VAE an SD v1 layout?)"
                )
        if self.cfg.checkpoint_projections and torch.is_grad_enabled() and self.training:
            outs = torch_checkpoint.checkpoint(self._project, size, *feats, use_reentrant=False)
        else:
            outs = self._project(size, *feats)
        return dict(zip(FEATURE_NAMES, outs, strict=True))
