"""One wrapper module per exported graph, with named inputs/outputs and symbolic dimensions.

The dense parts of XMask3D split into these graphs (reference-notes §1; ``model/xmask3d.py``):

    prefix ──captioner──> context, time_cond
    image (S x S, [0, 1]) ──vae──> 4 VAE taps, latent        (encoder + first 2 decoder levels)
    latent, context, time_cond ──unet──> 4 UNet taps          (fixed timestep and noise baked in)
    8 taps ──feature_projections──> s2, s3, s4, s5
    s2..s5 ──pixel_decoder──> mask_features, multi_scale_0..2 (grid_sample deformable attention)
    multi_scale_*, mask_features ──mask_decoder──> pred_masks, mask_embed (final layer only)
    tokens ──clip_text──> text_embed;  image (Sc x Sc) ──clip_image──> image_embed, patch_embed
    image, mask_logits ──maskclip──> mask_embed (num_masks dynamic)
    feat_2d, feat_3d, covered ──fusion──> fused;  features, text_embed ──classifier──> logits
    features ──binary_head──> logit, p_base                  (the dense part after MinkUNet18A)

Each wrapper only re-arranges the inputs and outputs of the model's own modules (shared
parameters, no copies), so PyTorch through a wrapper *is* the reference of the parity check.
Image resizing (to ``diffusion.image_size`` / ``clip.image_size``) stays outside the graphs (one
``F.interpolate`` in :mod:`xmask3d_ros.export.runtime`), so every image graph has a static
spatial shape, which TensorRT prefers. Symbolic dimensions: ``batch`` (images per call),
``num_labels`` (class names), ``num_masks`` (masks kept after the clean-up), ``num_points``
(visible points or voxels). The sparse 3D branch is not exported: it stays in PyTorch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmask3d_ros.config.model import ModelConfig

__all__ = [
    "DIM_NAMES",
    "GRAPH_NAMES",
    "DimRange",
    "ExportParts",
    "GraphSpec",
    "TensorSpec",
    "build_graphs",
    "build_parts",
    "default_dim_ranges",
    "example_dims",
    "parts_from_model",
    "sample_inputs",
]

GRAPH_NAMES: tuple[str, ...] = (
    "captioner",
    "vae",
    "unet",
    "feature_projections",
    "pixel_decoder",
    "mask_decoder",
    "clip_text",
    "clip_image",
    "maskclip",
    "fusion",
    "classifier",
    "binary_head",
)
DIM_NAMES: tuple[str, ...] = ("batch", "num_labels", "num_masks", "num_points")
_TAP_NAMES = {  # diffusion.TAPS names -> graph tensor names
    "vae_encoder.5": "vae_encoder_5",
    "vae_encoder.7": "vae_encoder_7",
    "unet_output.2": "unet_output_2",
    "unet_output.5": "unet_output_5",
    "unet_output.8": "unet_output_8",
    "unet_output.11": "unet_output_11",
    "vae_decoder.2": "vae_decoder_2",
    "vae_decoder.5": "vae_decoder_5",
}
_FEATURES = ("s2", "s3", "s4", "s5")


@dataclass(frozen=True)
class DimRange:
    """Range of one symbolic dimension: TensorRT optimisation profile (min, opt, max)."""

    min: int  # smallest size an engine accepts
    opt: int  # size the engine is tuned for
    max: int  # largest size an engine accepts

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"need 1 <= min <= opt <= max, got {self.min}, {self.opt}, {self.max}")

    @classmethod
    def parse(cls, text: str) -> DimRange:
        """``"min:opt:max"`` (command line) -> DimRange."""
        try:
            lo, opt, hi = (int(x) for x in text.split(":"))
        except ValueError:
            raise ValueError(f"expected min:opt:max integers, got {text!r}") from None
        return cls(lo, opt, hi)


def default_dim_ranges(cfg: ModelConfig) -> dict[str, DimRange]:
    """Profile ranges sized for a keyframe pipeline: one image, up to the decoder's masks."""
    q = cfg.mask_generator.num_queries
    return {
        "batch": DimRange(1, 1, 2),
        "num_labels": DimRange(1, 32, 1024),
        "num_masks": DimRange(1, q, q),
        "num_points": DimRange(1, 50_000, 400_000),
    }


@dataclass(frozen=True)
class TensorSpec:
    """A named graph input or output; ``shape`` entries are ints or symbolic dimension names."""

    name: str
    shape: tuple[int | str, ...]
    dtype: torch.dtype = torch.float32
    sample: str = "normal"  # how parity draws random values: normal | unit | tokens | bool

    def concrete(self, dims: Mapping[str, int]) -> tuple[int, ...]:
        """The shape with every symbol replaced by ``dims[symbol]``."""
        return tuple(d if isinstance(d, int) else int(dims[d]) for d in self.shape)

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}


@dataclass(frozen=True, eq=False)
class GraphSpec:
    """Everything the exporter, the parity check and the runtimes need about one graph."""

    name: str
    module: nn.Module  # wrapper: forward(*inputs in order) -> tuple of outputs in order
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    exporter: str  # preferred ONNX exporter: "torchscript" or "dynamo" (see onnx_export.py)
    description: str
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. token vocabulary for sampling

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """TorchScript exporter form: tensor name -> {axis: symbol}, inputs and outputs."""
        return {t.name: t.dynamic_axes for t in (*self.inputs, *self.outputs) if t.dynamic_axes}

    def symbols(self) -> tuple[str, ...]:
        seen = dict.fromkeys(d for t in self.inputs for d in t.shape if isinstance(d, str))
        return tuple(seen)

    @torch.no_grad()
    def run(self, *args: Tensor) -> tuple[Tensor, ...]:
        out = self.module(*args)
        return out if isinstance(out, tuple) else (out,)


# ---- the parts -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ExportParts:
    """The model's dense modules that get exported (shared with the model, not copied)."""

    mask_branch: nn.Module  # model.mask_branch.MaskBranch
    clip: nn.Module  # model.clip.ClipModel
    fusion: nn.Module  # model.fusion.FeatureFusion
    binary_head: nn.Module | None  # BatchNorm1d -> ReLU -> Linear(C, 1); None when disabled

    def modules(self) -> dict[str, nn.Module]:
        """Part name -> module, in a fixed order (the weights hash iterates this)."""
        out = {"mask_branch": self.mask_branch, "clip": self.clip, "fusion": self.fusion}
        if self.binary_head is not None:
            out["binary_head"] = self.binary_head
        return out


def parts_from_model(model: nn.Module) -> ExportParts:
    """The exported parts of an :class:`~xmask3d_ros.model.xmask3d.XMask3D`."""
    missing = [a for a in ("branch2d", "clip", "fusion", "branch3d") if not hasattr(model, a)]
    if missing:
        raise TypeError(f"{type(model).__name__} is not an XMask3D model: no {missing}")
    branch3d: Any = model.branch3d
    return ExportParts(
        mask_branch=model.branch2d,  # type: ignore[arg-type]
        clip=model.clip,  # type: ignore[arg-type]
        fusion=model.fusion,  # type: ignore[arg-type]
        binary_head=getattr(branch3d, "binary_head", None),
    )


def build_parts(cfg: ModelConfig, *, seed: int | None = 0) -> ExportParts:
    """Build the model of ``cfg`` (weights from its paths, else seeded random init), eval mode."""
    from xmask3d_ros.model.build import build_model

    return parts_from_model(build_model(cfg, seed=seed).eval())


# ---- wrappers --------------------------------------------------------------------------------


class CaptionerGraph(nn.Module):
    def __init__(self, captioner: nn.Module) -> None:
        super().__init__()
        self.captioner = captioner

    def forward(self, prefix: Tensor) -> tuple[Tensor, Tensor]:
        context, time_cond = self.captioner(prefix)
        return context, time_cond


class VaeGraph(nn.Module):
    """VAE encoder (taps + posterior mean) and the decoder's first two levels (two taps).

    The extractor stops the decoder by an exception once its taps are captured; the TorchScript
    tracer records only the ops that ran, so the graph holds no dead decoder levels.
    """

    def __init__(self, extractor: Any) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        ex = self.extractor
        taps, mean = ex._vae_taps(image * 2.0 - 1.0)  # [0, 1] -> [-1, 1] as the extractor
        return (
            taps["vae_encoder.5"],
            taps["vae_encoder.7"],
            taps["vae_decoder.2"],
            taps["vae_decoder.5"],
            mean * ex.scaling_factor,
        )


class UnetGraph(nn.Module):
    """One UNet pass at ``diffusion.timestep``, fixed noise, the captioner's condition as input."""

    def __init__(self, extractor: Any) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, latent: Tensor, context: Tensor, time_cond: Tensor) -> tuple[Tensor, ...]:
        taps = self.extractor._unet_taps(latent, context, time_cond)
        names = ("unet_output.2", "unet_output.5", "unet_output.8", "unet_output.11")
        return tuple(taps[n] for n in names)


class FeatureProjectionGraph(nn.Module):
    """The 8 bottleneck projections (trainable) summed per stride into s2..s5.

    Inputs come in ``diffusion.TAPS`` order (VAE encoder, UNet, VAE decoder taps).
    """

    def __init__(self, extractor: Any, image_size: int) -> None:
        super().__init__()
        self.extractor = extractor
        self.size = (image_size, image_size)

    def forward(self, *taps: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.extractor._project(self.size, *taps))


class PixelDecoderGraph(nn.Module):
    def __init__(self, pixel_decoder: nn.Module) -> None:
        super().__init__()
        self.pixel_decoder = pixel_decoder

    def forward(self, s2: Tensor, s3: Tensor, s4: Tensor, s5: Tensor) -> tuple[Tensor, ...]:
        mask_features, multi_scale = self.pixel_decoder({"s2": s2, "s3": s3, "s4": s4, "s5": s5})
        return (mask_features, *multi_scale)


class MaskDecoderGraph(nn.Module):
    """Masked-attention decoder + pooled mask embeddings; only the final layer's outputs.

    Levels a short decoder never attends to (tiny: 2 layers use 2 of 3) are pruned from the
    ONNX inputs by the exporter; the runtimes feed only the inputs a graph declares.
    """

    def __init__(self, mask_decoder: nn.Module) -> None:
        super().__init__()
        self.mask_decoder = mask_decoder

    def forward(
        self, ms0: Tensor, ms1: Tensor, ms2: Tensor, mask_features: Tensor
    ) -> tuple[Tensor, Tensor]:
        out = self.mask_decoder([ms0, ms1, ms2], mask_features)
        return out.pred_masks, out.mask_embed


class ClipTextGraph(nn.Module):
    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, tokens: Tensor) -> Tensor:
        return cast(Tensor, self.clip.clip.encode_text(tokens).float())


class ClipImageGraph(nn.Module):
    """Class-token and patch embeddings of a CLIP-sized image in [0, 1] (normalised inside)."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        dense = self.clip.dense_features(image)
        return dense.cls, dense.patches


class MaskClipGraph(nn.Module):
    """MaskCLIP: one embedding per mask (the masks are logits on the mask-decoder grid)."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, image: Tensor, mask_logits: Tensor) -> Tensor:
        return cast(Tensor, self.clip.mask_embeddings(image, mask_logits))


class FusionGraph(nn.Module):
    """``FeatureFusion`` as a dense select: ``where(covered, Linear([f2d, f3d]), f3d)``.

    Row for row the same values as the module (which runs the linear on covered rows only);
    the dense form has no data-dependent shapes, so TensorRT profiles stay simple.
    """

    def __init__(self, fusion: Any) -> None:
        super().__init__()
        self.fusion = fusion

    def forward(self, feat_2d: Tensor, feat_3d: Tensor, covered: Tensor) -> Tensor:
        fused = self.fusion.linear(torch.cat([feat_2d, feat_3d], dim=-1))
        return torch.where(covered[:, None], fused.to(feat_3d.dtype), feat_3d)


class ClassifierGraph(nn.Module):
    """``logit_scale * cos(feature, text)`` with the model's learnable scale (reference §1.11)."""

    def __init__(self, post_mask_embed: Any) -> None:
        super().__init__()
        self.post_mask_embed = post_mask_embed

    def forward(self, features: Tensor, text_embed: Tensor) -> Tensor:
        scale = self.post_mask_embed.scale()
        f = F.normalize(features, dim=-1)
        t = F.normalize(text_embed.to(f.dtype), dim=-1)
        return cast(Tensor, scale * (f @ t.t()))


class BinaryHeadGraph(nn.Module):
    """BatchNorm1d (running statistics) -> ReLU -> Linear(C, 1): logit and p(base) per row."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        logit = self.head(features)[:, 0]
        return logit, logit.sigmoid()


# ---- specs -----------------------------------------------------------------------------------


def _t(
    name: str, *shape: int | str, dtype: torch.dtype = torch.float32, sample: str = "normal"
) -> TensorSpec:
    return TensorSpec(name, tuple(shape), dtype, sample)


def build_graphs(parts: ExportParts, cfg: ModelConfig) -> dict[str, GraphSpec]:
    """Graph name -> spec, in :data:`GRAPH_NAMES` order (``binary_head`` only when enabled)."""
    from xmask3d_ros.model.diffusion import TAPS

    if tuple(_TAP_NAMES) != tuple(t.name for t in TAPS):
        raise RuntimeError("diffusion.TAPS changed order or names: update export.graphs._TAP_NAMES")
    mb: Any = parts.mask_branch
    clip: Any = parts.clip
    ex = mb.extractor
    s, e = cfg.diffusion.image_size, cfg.clip.embed_dim
    cap, m = cfg.captioner, cfg.mask_generator
    lat_c = int(ex.vae.config.latent_channels)
    tap_c = dict(zip((t.name for t in TAPS), ex.tap_channels, strict=True))
    tap_hw = {t.name: s // t.stride for t in TAPS}
    fd = cfg.diffusion.feature_dim

    def tap(name: str) -> TensorSpec:
        return _t(_TAP_NAMES[name], "batch", tap_c[name], tap_hw[name], tap_hw[name])

    sc, g, ctx = clip.image_size, clip.image_size // clip.patch_size, int(clip.clip.context_length)
    grid = s // 4  # mask-decoder grid (stride 4)
    ms_hw = (s // 32, s // 16, s // 8)  # pixel decoder's multi-scale outputs, low resolution first
    specs = [
        GraphSpec(
            "captioner", CaptionerGraph(mb.captioner),
            (_t("prefix", "batch", e),),
            (_t("context", "batch", cap.context_tokens, cap.cross_attention_dim),
             _t("time_cond", "batch", cap.time_embed_dim)),
            "torchscript", "implicit 3D captioner: global 3D feature -> UNet condition",
        ),
        GraphSpec(
            "vae", VaeGraph(ex),
            (_t("image", "batch", 3, s, s, sample="unit"),),
            (tap("vae_encoder.5"), tap("vae_encoder.7"), tap("vae_decoder.2"),
             tap("vae_decoder.5"), _t("latent", "batch", lat_c, s // 8, s // 8)),
            "torchscript", "SD VAE encoder + first two decoder levels (feature taps, latent)",
        ),
        GraphSpec(
            "unet", UnetGraph(ex),
            (_t("latent", "batch", lat_c, s // 8, s // 8),
             _t("context", "batch", cap.context_tokens, cap.cross_attention_dim),
             _t("time_cond", "batch", cap.time_embed_dim)),
            tuple(tap(n) for n in ("unet_output.2", "unet_output.5", "unet_output.8",
                                   "unet_output.11")),
            "torchscript",
            f"SD UNet at t={cfg.diffusion.timestep} (fixed noise), up to its last tap",
        ),
        GraphSpec(
            "feature_projections", FeatureProjectionGraph(ex, s),
            tuple(tap(n) for n in _TAP_NAMES),
            tuple(_t(f, "batch", fd, s // 2 ** (i + 2), s // 2 ** (i + 2))
                  for i, f in enumerate(_FEATURES)),
            "torchscript", "bottleneck projections of the 8 taps, summed per stride",
        ),
        GraphSpec(
            "pixel_decoder", PixelDecoderGraph(mb.pixel_decoder),
            tuple(_t(f, "batch", fd, s // 2 ** (i + 2), s // 2 ** (i + 2))
                  for i, f in enumerate(_FEATURES)),
            (_t("mask_features", "batch", m.mask_dim, grid, grid),
             *(_t(f"multi_scale_{i}", "batch", m.conv_dim, hw, hw) for i, hw in enumerate(ms_hw))),
            "torchscript", "MSDeformAttn pixel decoder (grid_sample deformable attention)",
        ),
        GraphSpec(
            "mask_decoder", MaskDecoderGraph(mb.mask_decoder),
            (*(_t(f"multi_scale_{i}", "batch", m.conv_dim, hw, hw) for i, hw in enumerate(ms_hw)),
             _t("mask_features", "batch", m.mask_dim, grid, grid)),
            (_t("pred_masks", "batch", m.num_queries, grid, grid),
             _t("mask_embed", "batch", m.num_queries, e)),
            "torchscript", "masked-attention decoder + pooled mask embeddings (final layer)",
        ),
        GraphSpec(
            "clip_text", ClipTextGraph(clip),
            (_t("tokens", "num_labels", ctx, dtype=torch.int64, sample="tokens"),),
            (_t("text_embed", "num_labels", e),),
            "torchscript", "CLIP text encoder (BPE tokens -> joint space)",
            extra={"vocab_size": int(clip.clip.vocab_size)},
        ),
        GraphSpec(
            "clip_image", ClipImageGraph(clip),
            (_t("image", "batch", 3, sc, sc, sample="unit"),),
            (_t("image_embed", "batch", e), _t("patch_embed", "batch", e, g, g)),
            "torchscript", "CLIP image encoder: class token and patch embeddings",
        ),
        GraphSpec(
            "maskclip", MaskClipGraph(clip),
            (_t("image", "batch", 3, sc, sc, sample="unit"),
             _t("mask_logits", "batch", "num_masks", grid, grid)),
            (_t("mask_embed", "batch", "num_masks", e),),
            # the TorchScript tracer bakes the mask count into MaskCLIP's reshapes
            "dynamo", "MaskCLIP: one CLIP embedding per mask (masked mask tokens)",
        ),
        GraphSpec(
            "fusion", FusionGraph(parts.fusion),
            (_t("feat_2d", "num_points", e), _t("feat_3d", "num_points", e),
             _t("covered", "num_points", dtype=torch.bool, sample="bool")),
            (_t("fused", "num_points", e),),
            "torchscript", "fusion Linear([2D mask feature, 3D feature]) on covered points",
        ),
        GraphSpec(
            "classifier", ClassifierGraph(mb.mask_decoder.post_mask_embed),
            (_t("features", "num_points", e), _t("text_embed", "num_labels", e)),
            (_t("logits", "num_points", "num_labels"),),
            "torchscript", "classifier projection: logit_scale * cos(feature, text)",
        ),
    ]
    if parts.binary_head is not None:
        c3 = _binary_channels(parts.binary_head)
        specs.append(GraphSpec(
            "binary_head", BinaryHeadGraph(parts.binary_head),
            (_t("features", "num_points", c3),),
            (_t("logit", "num_points"), _t("p_base", "num_points")),
            "torchscript", "binary base/novel head, dense part (BN -> ReLU -> Linear)",
        ))
    for spec in specs:
        spec.module.eval()
    return {spec.name: spec for spec in specs}


def _binary_channels(head: nn.Module) -> int:
    for module in head.modules():
        if isinstance(module, nn.BatchNorm1d):
            return int(module.num_features)
        if isinstance(module, nn.Linear):
            return int(module.in_features)
    raise TypeError(f"cannot tell the input width of the binary head {type(head).__name__}")


def example_dims(**overrides: int) -> dict[str, int]:
    """Sizes used to trace a graph: >= 2 everywhere (torch.export specialises 0 and 1)."""
    dims = {"batch": 2, "num_labels": 3, "num_masks": 3, "num_points": 5}
    dims.update(overrides)
    return dims



def sample_inputs(
    spec: GraphSpec, dims: Mapping[str, int], *, seed: int = 0
) -> tuple[Tensor, ...]:
    """Seeded random inputs of ``spec`` at ``dims``, drawn as each input's ``sample`` says.

    ``unit``: uniform [0, 1] (images); ``tokens``: BPE ids with a start token, an end-of-text
    token (the largest id, which open_clip's argmax pooling looks for) and zero padding;
    ``bool``: fair coin; ``normal``: standard normal.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for t in spec.inputs:
        shape = t.concrete(dims)
        if t.sample == "unit":
            x = torch.rand(shape, generator=gen)
        elif t.sample == "bool":
            x = torch.rand(shape, generator=gen) < 0.5
        elif t.sample == "tokens":
            vocab = int(spec.extra.get("vocab_size", 49408))
            n, ctx = shape
            x = torch.zeros(shape, dtype=torch.int64)
            lengths = torch.randint(1, max(ctx - 1, 2), (n,), generator=gen)
            for i, length in enumerate(lengths.tolist()):
                x[i, 0] = vocab - 2  # <start_of_text>
                x[i, 1 : 1 + length] = torch.randint(1, vocab - 2, (length,), generator=gen)
                x[i, min(1 + length, ctx - 1)] = vocab - 1  # <end_of_text>
        else:
            x = torch.randn(shape, generator=gen)
        out.append(x.to(t.dtype))
    return tuple(out)
