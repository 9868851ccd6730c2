"""XMask3D model configuration: one dataclass tree builds both the `tiny` and the `paper` model.

Defaults are the paper configuration (reference-notes §1: MinkUNet34C at 2 cm, SD v1 UNet + VAE,
CLIP ViT-L/14, 50 queries, 9 decoder layers, 768-d joint space, B15/N4 loss weights).
`config/model/tiny.yaml` overrides widths and depths for random-init tests and the demo.
Weights always come from local paths; an empty path means "random init" and is only allowed when
``allow_random_init`` is true (tests, the demo's from-scratch training).
"""

from __future__ import annotations

from dataclasses import dataclass

from xmask3d_ros.config.model_3d import Backbone3DCfg, binary_backbone_cfg
from xmask3d_ros.config.schema import ConfigError, param, section

__all__ = [
    "BinaryHeadCfg",
    "CaptionerCfg",
    "ClipArchCfg",
    "ClipCfg",
    "DiffusionCfg",
    "EnsembleCfg",
    "LossCfg",
    "MaskGeneratorCfg",
    "ModelConfig",
    "RuntimeCfg",
]


@dataclass(frozen=True)
class ClipArchCfg:
    """The project's small open_clip architecture (``clip.model_name: tiny``), random init.

    A ViT image tower and a causal text transformer with open_clip's BPE vocabulary; the joint
    width and input size come from ``clip.embed_dim`` and ``clip.image_size``.
    """

    patch_size: int = param(8, "ViT patch size in pixels (clip.image_size must be a multiple)", gt=0)
    vision_width: int = param(64, "ViT token width", gt=0)
    vision_layers: int = param(2, "ViT transformer blocks", gt=0)
    vision_head_width: int = param(32, "ViT attention head width (heads = width / head width)", gt=0)
    text_width: int = param(64, "text transformer width", gt=0)
    text_layers: int = param(2, "text transformer blocks", gt=0)
    text_heads: int = param(2, "text transformer heads", gt=0)
    context_length: int = param(32, "text tokens incl. start/end (longer prompts are cut)", ge=3)

    def __post_init__(self) -> None:
        if self.vision_width % self.vision_head_width:
            raise ConfigError(
                f"vision_width: {self.vision_width} must be divisible by "
                f"vision_head_width={self.vision_head_width}"
            )
        if self.text_width % self.text_heads:
            raise ConfigError(
                f"text_width: {self.text_width} must be divisible by text_heads={self.text_heads}"
            )


@dataclass(frozen=True)
class ClipCfg:
    """open_clip model for class-name text embeddings and MaskCLIP mask embeddings (frozen)."""

    model_name: str = param(
        "ViT-L-14",
        "open_clip architecture name (reference: ViT-L-14, 224 px), or 'tiny' for the small "
        "architecture of clip.arch",
    )
    weights_path: str = param(
        "", "local open_clip checkpoint (.safetensors or .bin/.pt state dict); empty = random init"
    )
    embed_dim: int = param(768, "joint image-text embedding width", gt=0)
    image_size: int = param(224, "CLIP input resolution in pixels (MaskCLIP resizes to it)", gt=0)
    quick_gelu: bool = param(
        True, "QuickGELU activations: OpenAI-trained weights (ViT-L-14 'openai') need them"
    )
    seed: int = param(0, "torch seed of the random init (only without weights)", ge=0)
    prompt_template: str = param(
        "{}", "text prompt around a class name; the reference embeds raw names ('{}')"
    )
    text_cache_size: int = param(4096, "labels whose text embedding is kept in memory", ge=1)
    maskclip_blocks: int = param(
        0,
        "last ViT blocks in which MaskCLIP mask tokens attend (masked); 0 = every block "
        "(reference). Earlier blocks run the plain image and the tokens start as copies of CLS",
        ge=0,
    )
    arch: ClipArchCfg = section(ClipArchCfg, "architecture used when model_name is 'tiny'")

    def __post_init__(self) -> None:
        if "{}" not in self.prompt_template:
            raise ConfigError(
                f"prompt_template: {self.prompt_template!r} must contain '{{}}' for the class name"
            )
        if self.model_name == "tiny" and self.image_size % self.arch.patch_size:
            raise ConfigError(
                f"image_size: {self.image_size} must be a multiple of "
                f"arch.patch_size={self.arch.patch_size}"
            )


@dataclass(frozen=True)
class DiffusionCfg:
    """Frozen diffusers UNet2DConditionModel + AutoencoderKL used as a one-step feature extractor."""

    unet_path: str = param("", "local diffusers folder of the SD v1 UNet; empty = random init")
    vae_path: str = param("", "local diffusers folder of the SD v1 VAE; empty = random init")
    layout: str = param(
        "sd_v1", "random-init layout when no weights are given", choices=("sd_v1", "tiny")
    )
    image_size: int = param(512, "input resized to this square size (reference: 512)", gt=0)
    timestep: int = param(0, "the single diffusion timestep of the feature pass", ge=0, lt=1000)
    noise_seed: int = param(42, "seed of the fixed noise added to the latent (share_noise)")
    feature_dim: int = param(
        512, "channels of each projected multi-scale feature (s2..s5); a multiple of 4", gt=0
    )
    checkpoint_projections: bool = param(
        True, "recompute the feature projections in backward to save memory (reference: on)"
    )
    tiny_unet_channels: tuple[int, ...] = param(
        (32, 32, 64, 64),
        "UNet block widths of the 'tiny' layout (SD v1's 4 levels, 2 layers per block)",
        gt=0,
    )
    tiny_vae_channels: tuple[int, ...] = param(
        (32, 32, 64, 64), "VAE block widths of the 'tiny' layout (SD v1's 4 levels)", gt=0
    )
    tiny_attention_heads: int = param(2, "UNet attention heads of the 'tiny' layout", gt=0)

    def __post_init__(self) -> None:
        if self.image_size % 64:
            raise ConfigError(
                f"image_size: {self.image_size} must be a multiple of 64 (VAE stride 8 x UNet "
                "stride 8)"
            )
        if self.feature_dim % 4:
            raise ConfigError(
                f"feature_dim: {self.feature_dim} must be a multiple of 4 (bottleneck width / 4)"
            )
        for key in ("tiny_unet_channels", "tiny_vae_channels"):
            if len(getattr(self, key)) != 4:
                raise ConfigError(
                    f"{key}: {getattr(self, key)} must have 4 widths (SD v1's 4 levels)"
                )
        bad = [c for c in self.tiny_unet_channels if c % self.tiny_attention_heads]
        if bad:
            raise ConfigError(
                f"tiny_unet_channels: {self.tiny_unet_channels} must be divisible by "
                f"tiny_attention_heads={self.tiny_attention_heads}"
            )


@dataclass(frozen=True)
class CaptionerCfg:
    """Implicit 3D captioner: global 3D feature -> UNet text condition through zero-init gates."""

    context_tokens: int = param(77, "length of the cross-attention context (SD text length)", gt=0)
    cross_attention_dim: int = param(768, "width of the UNet's cross-attention context", gt=0)
    time_embed_dim: int = param(1280, "width of the UNet's timestep embedding", gt=0)
    uncond_path: str = param(
        "",
        "safetensors file with the (1, context_tokens, cross_attention_dim) SD text-encoder "
        "embedding of the empty prompt (made offline by model.captioner."
        "save_empty_prompt_embedding); empty = a seeded constant, replaced by the one stored "
        "in weights_path",
    )


@dataclass(frozen=True)
class MaskGeneratorCfg:
    """Mask2Former-style head: deformable pixel decoder + masked-attention transformer decoder."""

    num_queries: int = param(50, "mask queries (reference 50; ODISE uses 100)", gt=0)
    dec_layers: int = param(9, "masked-attention decoder layers (+1 prediction on the input)", gt=0)
    hidden_dim: int = param(256, "transformer width", gt=0)
    num_heads: int = param(8, "attention heads in encoder and decoder", gt=0)
    dim_feedforward: int = param(2048, "decoder FFN width", gt=0)
    enc_layers: int = param(6, "deformable-attention pixel-decoder layers", ge=0)
    enc_dim_feedforward: int = param(1024, "pixel-decoder FFN width", gt=0)
    enc_points: int = param(4, "sampling points per head and level in deformable attention", gt=0)
    conv_dim: int = param(256, "pixel-decoder convolution width", gt=0)
    mask_dim: int = param(256, "per-pixel mask feature width", gt=0)
    mask_shape: tuple[int, int] = param(
        (240, 320), "(height, width) masks are resized to before sampling at points", gt=0
    )
    mask_threshold: float = param(0.5, "sigmoid threshold of a mask pixel", gt=0.0, lt=1.0)
    logit_scale_init: float = param(1.0 / 0.07, "initial learnable logit scale", gt=0.0)
    logit_scale_max: float = param(100.0, "clamp of the learnable logit scale", gt=0.0)

    def __post_init__(self) -> None:
        if self.hidden_dim % self.num_heads:
            raise ConfigError(
                f"hidden_dim: {self.hidden_dim} must be divisible by num_heads={self.num_heads}"
            )
        if self.logit_scale_init > self.logit_scale_max:
            raise ConfigError(
                f"logit_scale_init: {self.logit_scale_init} exceeds logit_scale_max="
                f"{self.logit_scale_max}"
            )


@dataclass(frozen=True)
class BinaryHeadCfg:
    """Base-vs-novel head (MinkUNet18A + BN + ReLU + Linear) and how its decision is applied."""

    enabled: bool = param(True, "build and use the binary head")
    gating: str = param(
        "hard",
        "hard = argmax over base or novel only (reference); soft = PLA's calibration; off",
        choices=("hard", "soft", "off"),
    )
    threshold: float = param(0.5, "p(base) above which a point counts as base", gt=0, lt=1)
    mask_threshold: float = param(
        0.5,
        "mean p(base) over a mask's points above which the mask may only take base classes "
        "(reference binary_2d_thresh)",
        gt=0,
        lt=1,
    )
    base_classes: tuple[str, ...] = param(
        (),
        "names of the classes the model was trained on (the binary head's base group; the "
        "trainer records its partition's). Map queries flag these labels as base for the gating "
        "and the ensemble ratios; empty = every query label counts as novel",
    )


@dataclass(frozen=True)
class EnsembleCfg:
    """Geometric ensemble of fused-feature and MaskCLIP probabilities (reference-notes §1.12)."""

    enabled: bool = param(True, "combine with MaskCLIP probabilities for points inside masks")
    base_ratio: float = param(0.65, "exponent on the fused probability for base classes", ge=0, le=1)
    novel_ratio: float = param(0.35, "exponent on the fused probability for novel classes", ge=0, le=1)
    mask_keep_score: float = param(
        0.0,
        "masks whose best class probability is <= this are dropped before the panoptic clean-up "
        "(reference scores_keep_thresh: 0 keeps every mask)",
        ge=0,
        lt=1,
    )


@dataclass(frozen=True)
class LossCfg:
    """Loss weights and start epochs (reference-notes §1.14; defaults = ScanNet B15/N4)."""

    mask_ce: float = param(2.0, "Mask2Former class loss weight", ge=0)
    mask_bce: float = param(5.0, "Mask2Former mask BCE weight", ge=0)
    mask_dice: float = param(5.0, "Mask2Former dice weight", ge=0)
    no_object_weight: float = param(0.1, "eos_coef: class weight of the no-object slot", ge=0)
    num_points: int = param(12544, "points sampled per mask for mask losses", gt=0)
    oversample_ratio: float = param(3.0, "point oversampling before importance sampling", ge=1)
    importance_ratio: float = param(0.75, "share of points chosen by uncertainty", ge=0, le=1)
    ce_3d: float = param(4.0, "CE of fused point logits", ge=0)
    ce_3d_pure: float = param(4.0, "CE of pure-3D point logits", ge=0)
    ce_3d_balance: float = param(
        0.0,
        "class weights frequency^-p for loss_3d / loss_3d_pure, frequencies counted on the "
        "training scenes' base labels (0 = plain CE, the reference; 0.5 = inverse square root)",
        ge=0,
        le=1,
    )
    mask_contra: float = param(0.5, "mask-level cosine regularisation (loss_3d_contra)", ge=0)
    mask_contra_start_epoch: int = param(50, "epoch from which mask_contra is switched on", ge=0)
    contra_min_points: int = param(10, "mask_contra: a mask needs this many points", ge=1)
    contra_max_novel: int = param(4, "mask_contra: novel-dominant masks used per view", ge=0)
    contra_max_base: int = param(1, "mask_contra: base-dominant masks used per view", ge=0)
    contra_novel_ratio: float = param(
        1.8, "mask_contra: novel points must exceed this times the other points", ge=0
    )
    contra_novel_min: int = param(10, "mask_contra: novel points must exceed this count", ge=0)
    contra_base_ratio: float = param(
        20.0, "mask_contra: base points must exceed this times the other points", ge=0
    )
    contra_base_min: int = param(150, "mask_contra: base points must exceed this count", ge=0)
    caption_fused: float = param(1.5, "view caption cosine loss on fused features", ge=0)
    caption_3d: float = param(1.0, "view caption cosine loss on pure-3D features", ge=0)
    caption_2d: float = param(4.0, "view caption cosine loss on 2D mask features", ge=0)
    binary: float = param(16.0, "binary head BCE weight", ge=0)
    binary_pos_weight: float = param(0.267, "BCE pos_weight (base share of points)", gt=0)


@dataclass(frozen=True)
class RuntimeCfg:
    """Where and how the model runs."""

    device: str = param("auto", "auto = cuda if available else cpu", choices=("auto", "cpu", "cuda"))
    dtype: str = param(
        "float32", "dense parts' dtype (float16 only on cuda)", choices=("float32", "float16")
    )
    head_runtime: str = param(
        "torch", "runtime of the exported dense heads", choices=("torch", "onnxruntime", "tensorrt")
    )
    engine_dir: str = param("", "folder of exported ONNX graphs / TensorRT engines")
    frame_voxel_shift: float = param(
        0.5,
        "map-frame inference (infer_frame) shifts the points by this fraction of "
        "backbone3d.voxel_size_m before the 3D branch voxelises them. A ROS map frame has the "
        "floor at z = 0, a voxel boundary, where depth noise scatters one surface over two voxel "
        "layers the network never saw in training; mid-cell it stays one layer (the network is "
        "translation-equivariant, so the shift changes nothing else). Measured on a demo room: "
        "point accuracy 27 percent unshifted, 73 percent shifted",
        ge=0, lt=1,
    )


@dataclass(frozen=True)
class ModelConfig:
    """Root of the XMask3D model configuration (config/model/*.yaml)."""

    name: str = param("paper", "human-readable name of this configuration")
    weights_path: str = param(
        "", "project checkpoint (.safetensors) with the trainable XMask3D weights; empty = none"
    )
    allow_random_init: bool = param(
        False, "permit empty weight paths (random init): tests, demo training"
    )
    backbone3d: Backbone3DCfg = section(Backbone3DCfg, "semantic 3D branch (MinkUNet34C)")
    binary3d: Backbone3DCfg = section(
        Backbone3DCfg, "binary head's own 3D network (MinkUNet18A)", default=binary_backbone_cfg
    )
    binary: BinaryHeadCfg = section(BinaryHeadCfg, "base/novel head")
    clip: ClipCfg = section(ClipCfg, "CLIP text/image encoder")
    diffusion: DiffusionCfg = section(DiffusionCfg, "frozen diffusion feature extractor")
    captioner: CaptionerCfg = section(CaptionerCfg, "implicit 3D captioner")
    mask_generator: MaskGeneratorCfg = section(MaskGeneratorCfg, "2D mask generator")
    ensemble: EnsembleCfg = section(EnsembleCfg, "MaskCLIP geometric ensemble")
    loss: LossCfg = section(LossCfg, "training losses")
    runtime: RuntimeCfg = section(RuntimeCfg, "device, dtype, head runtime")

    def __post_init__(self) -> None:
        if self.captioner.cross_attention_dim != self.clip.embed_dim:
            raise ConfigError(
                f"captioner.cross_attention_dim: {self.captioner.cross_attention_dim} must equal "
                f"clip.embed_dim={self.clip.embed_dim} (the 3D prefix lives in CLIP space)"
            )
        if not self.allow_random_init:
            missing = [
                key
                for key, value in (
                    ("clip.weights_path", self.clip.weights_path),
                    ("diffusion.unet_path", self.diffusion.unet_path),
                    ("diffusion.vae_path", self.diffusion.vae_path),
                )
                if not value
            ]
            if missing:
                raise ConfigError(
                    f"{missing[0]}: empty, but allow_random_init is false; give local weights "
                    "(see README 'Model weights') or set allow_random_init: true"
                )
