"""The 2D branch of XMask3D: image + global 3D feature -> masks and CLIP-space mask embeddings.

    prefix (B, E) --ImplicitCaptioner--> context (B, 77, 768), time_cond (B, 1280)
    image (B, 3, H, W) in [0, 1] --resize to image_size--> DiffusionFeatureExtractor -> s2..s5
    s2..s5 --MSDeformAttnPixelDecoder--> mask_features (stride 4), 3 scales
           --MaskedTransformerDecoder--> masks (B, Q, S/4, S/4), mask embeddings (B, Q, E) x (L+1)

One code path builds the ``tiny`` and the ``paper`` configuration (:func:`build_mask_branch`).
Frozen parts (SD UNet and VAE) live under :attr:`MaskBranch.FROZEN_PREFIXES`; they never require
grad, are excluded from :meth:`MaskBranch.trainable_parameters` and from
:meth:`MaskBranch.trainable_state_dict` (SD weights ship separately, as in the reference), and
stay in eval mode. Gradients still flow through the UNet into the captioner.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.config.schema import ConfigError
from xmask3d_ros.model.captioner import ImplicitCaptioner, load_empty_prompt_embedding
from xmask3d_ros.model.diffusion import (
    FEATURE_NAMES,
    DiffusionFeatureExtractor,
    build_unet,
    build_vae,
    check_local_weights,
)
from xmask3d_ros.model.mask_decoder import MaskedTransformerDecoder, MaskPrediction
from xmask3d_ros.model.pixel_decoder import MSDeformAttnPixelDecoder

__all__ = ["MaskBranch", "MaskBranchOutput", "build_mask_branch"]


@dataclass(frozen=True)
class MaskBranchOutput:
    """What the 2D branch gives the rest of the model (mask grid = image_size / 4)."""

    pred_masks: torch.Tensor  # (B, Q, S/4, S/4) mask logits of the final decoder layer
    mask_embed: torch.Tensor  # (B, Q, E) mask embeddings (CLIP space, not normalised)
    aux: tuple[MaskPrediction, ...]  # dec_layers earlier predictions, for deep supervision
    logit_scale: torch.Tensor  # () learnable temperature, exp'd and clamped
    mask_features: torch.Tensor  # (B, mask_dim, S/4, S/4) per-pixel features


class MaskBranch(nn.Module):
    """``forward(image (B,3,H,W) in [0,1], prefix (B,E)) -> MaskBranchOutput``."""

    FROZEN_PREFIXES: tuple[str, ...] = ("extractor.unet.", "extractor.vae.")

    def __init__(
        self,
        *,
        captioner: ImplicitCaptioner,
        extractor: DiffusionFeatureExtractor,
        pixel_decoder: MSDeformAttnPixelDecoder,
        mask_decoder: MaskedTransformerDecoder,
        image_size: int,
        mask_shape: tuple[int, int],
    ) -> None:
        super().__init__()
        self.captioner = captioner
        self.extractor = extractor
        self.pixel_decoder = pixel_decoder
        self.mask_decoder = mask_decoder
        self.image_size = image_size
        self.mask_shape = tuple(mask_shape)

    def forward(self, image: torch.Tensor, prefix: torch.Tensor) -> MaskBranchOutput:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(
                f"image must be (B, 3, H, W) in [0, 1], got shape {tuple(image.shape)}"
            )
        if prefix.shape[0] != image.shape[0]:
            raise ValueError(
                f"prefix batch {prefix.shape[0]} differs from image batch {image.shape[0]}"
            )
        size = (self.image_size, self.image_size)
        if tuple(image.shape[-2:]) != size:
            # reference: cv2.resize (bilinear, aspect ratio not kept) to 512 x 512
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        context, time_cond = self.captioner(prefix)
        feats = self.extractor(image, context, time_cond)
        mask_features, multi_scale = self.pixel_decoder(feats)
        out = self.mask_decoder(multi_scale, mask_features)
        return MaskBranchOutput(
            pred_masks=out.pred_masks,
            mask_embed=out.mask_embed,
            aux=out.aux,
            logit_scale=out.logit_scale,
            mask_features=mask_features,
        )

    def resize_masks(
        self, mask_logits: torch.Tensor, shape: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """(B, Q, h, w) logits -> (B, Q, *shape) bilinear (reference: to ``mask_shape`` 240x320)."""
        return F.interpolate(
            mask_logits, size=shape or self.mask_shape, mode="bilinear", align_corners=False
        )

    @classmethod
    def is_frozen(cls, name: str) -> bool:
        """Whether parameter/buffer ``name`` (relative to this module) belongs to SD."""
        return name.startswith(cls.FROZEN_PREFIXES)

    def trainable_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Parameters the optimiser steps: everything outside SD's UNet and VAE."""
        for name, p in self.named_parameters():
            if not self.is_frozen(name) and p.requires_grad:
                yield name, p

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        for _, p in self.trainable_named_parameters():
            yield p

    def frozen_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, p in self.named_parameters():
            if self.is_frozen(name):
                yield name, p

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict without SD's weights (what a project checkpoint stores)."""
        return {k: v for k, v in self.state_dict().items() if not self.is_frozen(k)}


def build_mask_branch(cfg: ModelConfig) -> MaskBranch:
    """Build the 2D branch of ``cfg`` (tiny or paper); local weights are checked before building.

    Random-init parts use the global torch RNG: seed it for reproducible models.
    """
    d, c, m = cfg.diffusion, cfg.captioner, cfg.mask_generator
    check_local_weights(d)  # every missing file fails here, before anything is built or run
    uncond = load_empty_prompt_embedding(c.uncond_path) if c.uncond_path else None
    vae = build_vae(d)
    unet = build_unet(d, cross_attention_dim=c.cross_attention_dim)
    extractor = DiffusionFeatureExtractor(d, unet=unet, vae=vae)
    if extractor.time_embed_dim != c.time_embed_dim:
        raise ConfigError(
            f"captioner.time_embed_dim: {c.time_embed_dim} differs from the UNet's timestep "
            f"embedding width {extractor.time_embed_dim} (4 x its first block width)"
        )
    captioner = ImplicitCaptioner(c, prefix_dim=cfg.clip.embed_dim, uncond=uncond)
    pixel_decoder = MSDeformAttnPixelDecoder(
        dict.fromkeys(FEATURE_NAMES, d.feature_dim),
        {name: 2 ** (i + 2) for i, name in enumerate(FEATURE_NAMES)},
        conv_dim=m.conv_dim,
        mask_dim=m.mask_dim,
        enc_layers=m.enc_layers,
        num_heads=m.num_heads,
        enc_dim_feedforward=m.enc_dim_feedforward,
        enc_points=m.enc_points,
    )
    mask_decoder = MaskedTransformerDecoder(m, in_channels=m.conv_dim, embed_dim=cfg.clip.embed_dim)
    return MaskBranch(
        captioner=captioner,
        extractor=extractor,
        pixel_decoder=pixel_decoder,
        mask_decoder=mask_decoder,
        image_size=d.image_size,
        mask_shape=m.mask_shape,
    )
