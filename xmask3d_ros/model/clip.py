"""Frozen open_clip model: class-name text embeddings (cached), dense image features, MaskCLIP.

Built from :class:`~xmask3d_ros.config.model.ClipCfg`:

* ``model_name: ViT-L-14`` (the paper; any open_clip architecture bundled with the wheel works)
  with weights read from ``clip.weights_path`` (safetensors, or a state dict through
  ``torch.load(weights_only=True)``). Nothing is downloaded: open_clip is only asked for its
  bundled architecture JSON, and the model is constructed directly.
* ``model_name: tiny``: the small architecture of ``clip.arch``, random init with ``clip.seed``.

MaskCLIP (reference-notes §1.12, paper appendix A.1, ODISE ``MaskCLIP``): the image is resized to
``image_size``; each mask (logits) is resized to it too, passed through a sigmoid and max-pooled
to the patch grid. One extra token per mask, a copy of the class token, is appended; it attends to
the class token and to the patches whose pooled mask probability is >= 0.5, and nothing attends to
it, so the image tokens compute exactly the plain CLIP forward. After the last block the mask
tokens go through ``ln_post`` and the projection like the class token: one embedding per mask.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmask3d_ros.config.model import ClipCfg
from xmask3d_ros.model.compat import ensure_torchvision_importable
from xmask3d_ros.model.errors import WeightsError

__all__ = [
    "CLIP_WEIGHTS_SOURCE",
    "KEPT_TOKENS_KEY",
    "ClipModel",
    "ClipWeightsError",
    "DenseImageFeatures",
    "build_clip",
    "clip_architecture",
    "load_clip_state_dict",
]

# Where the paper's CLIP weights come from (named in every missing-weights error).
CLIP_WEIGHTS_SOURCE = (
    "the open_clip 'ViT-L-14' / 'openai' release, e.g. the file open_clip_model.safetensors of the "
    "Hugging Face repository timm/vit_large_patch14_clip_224.openai; download it on a machine "
    "with network access and copy it here (nothing is downloaded at run time)"
)
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip OPENAI_DATASET_MEAN
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)  # open_clip OPENAI_DATASET_STD
_VOCAB_SIZE = 49408  # open_clip's BPE vocabulary (shipped in the wheel)
_TEXT_BATCH = 256  # labels per encode_text call (reference build_clip_text_embed)


class ClipWeightsError(WeightsError):
    """The CLIP weights file is missing or unreadable; the message names file, key and source."""


class DenseImageFeatures(NamedTuple):
    """CLIP image features in the joint space (after ``ln_post`` and the projection)."""

    cls: Tensor  # (B, E) class-token embedding = CLIP.encode_image
    patches: Tensor  # (B, E, gh, gw) patch-token embeddings on the patch grid


def _open_clip() -> Any:
    ensure_torchvision_importable()
    import open_clip

    return open_clip


def clip_architecture(cfg: ClipCfg) -> dict[str, Any]:
    """The open_clip model-config dict (``embed_dim``, ``vision_cfg``, ``text_cfg``) for ``cfg``.

    Raises ValueError naming ``clip.model_name`` / ``clip.embed_dim`` / ``clip.image_size`` when
    the architecture is unknown or disagrees with the config.
    """
    if cfg.model_name == "tiny":
        a = cfg.arch
        return {
            "embed_dim": cfg.embed_dim,
            "vision_cfg": {
                "image_size": cfg.image_size,
                "patch_size": a.patch_size,
                "width": a.vision_width,
                "layers": a.vision_layers,
                "head_width": a.vision_head_width,
            },
            "text_cfg": {
                "context_length": a.context_length,
                "vocab_size": _VOCAB_SIZE,
                "width": a.text_width,
                "heads": a.text_heads,
                "layers": a.text_layers,
            },
        }
    arch = _open_clip().get_model_config(cfg.model_name)
    if arch is None:
        names = _open_clip().list_models()
        vit = [n for n in names if n.startswith("ViT-")][:12]
        raise ValueError(
            f"clip.model_name: {cfg.model_name!r} is not an open_clip architecture bundled with "
            f"the installed wheel nor 'tiny' (e.g. {', '.join(vit)}, ...)"
        )
    vision = arch.get("vision_cfg", {})
    if vision.get("timm_model_name") or "hf_model_name" in arch.get("text_cfg", {}):
        raise ValueError(
            f"clip.model_name: {cfg.model_name!r} uses a timm/HF tower; MaskCLIP needs open_clip's "
            "own VisionTransformer and text transformer"
        )
    if int(arch["embed_dim"]) != cfg.embed_dim:
        raise ValueError(
            f"clip.embed_dim: {cfg.embed_dim} differs from {cfg.model_name}'s {arch['embed_dim']}"
        )
    if int(vision.get("image_size", 224)) != cfg.image_size:
        raise ValueError(
            f"clip.image_size: {cfg.image_size} differs from {cfg.model_name}'s "
            f"{vision.get('image_size')}"
        )
    return dict(arch)


def load_clip_state_dict(path: str | Path, *, key: str = "clip.weights_path") -> dict[str, Tensor]:
    """Read an open_clip state dict from ``path`` without unpickling arbitrary objects.

    ``.safetensors`` through safetensors; anything else through ``torch.load(weights_only=True)``.
    A ``{"state_dict": ...}`` wrapper (open_clip training checkpoints) is unwrapped and a
    DistributedDataParallel ``module.`` prefix removed; nothing else is renamed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ClipWeightsError(
            f"{key}: CLIP weights file {path} does not exist; expected {CLIP_WEIGHTS_SOURCE}"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure becomes one clear message
        raise ClipWeightsError(
            f"{key}: cannot read CLIP weights {path} ({type(err).__name__}: {err}); expected a "
            f"safetensors file or a plain state dict (a TorchScript OpenAI .pt archive must be "
            f"converted first), e.g. {CLIP_WEIGHTS_SOURCE}"
        ) from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ClipWeightsError(f"{key}: {path} does not hold a tensor state dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    state = dict(state)
    if KEPT_TOKENS_KEY in state:
        state = _expand_token_rows(state, path, key)
    return state


# A pruned token table (the demo's tiny CLIP, see save_clip_weights in training/clip_pretrain):
# "token_embedding.weight" holds only the rows of these token ids; every other row is zero.
KEPT_TOKENS_KEY = "token_embedding.kept_ids"


def _expand_token_rows(state: dict[str, Tensor], path: Path, key: str) -> dict[str, Tensor]:
    ids = state.pop(KEPT_TOKENS_KEY).to(torch.int64)
    rows = state.get("token_embedding.weight")
    if (rows is None or rows.ndim != 2 or ids.ndim != 1 or rows.shape[0] != ids.shape[0]
            or bool((ids < 0).any()) or bool((ids >= _VOCAB_SIZE).any())):
        raise ClipWeightsError(
            f"{key}: {path} has a pruned token table that does not fit the "
            f"{_VOCAB_SIZE}-token vocabulary"
        )
    dense = rows.new_zeros(_VOCAB_SIZE, rows.shape[1])
    dense[ids] = rows
    state["token_embedding.weight"] = dense
    return state


class ClipModel(nn.Module):
    """A frozen open_clip ``CLIP`` with the text cache and MaskCLIP of XMask3D.

    Always in eval mode with ``requires_grad=False``. Images are float RGB in [0, 1], shape
    (B, 3, H, W), any size (resized to ``image_size`` without keeping the aspect ratio, as the
    reference). Embeddings are returned unnormalised (callers use cosine similarity).
    """

    def __init__(self, clip: nn.Module, cfg: ClipCfg, tokenizer: Any) -> None:
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.prompt_template = cfg.prompt_template
        self.cache_size = cfg.text_cache_size
        visual = clip.visual
        if getattr(visual, "attn_pool", None) is not None or visual.pool_type != "tok":
            raise ValueError("MaskCLIP needs a ViT pooled by its class token (pool_type 'tok')")
        self.embed_dim = int(cfg.embed_dim)
        self.image_size = int(cfg.image_size)
        self.patch_size = int(visual.patch_size[0])
        self.num_blocks = len(visual.transformer.resblocks)
        if cfg.maskclip_blocks > self.num_blocks:
            raise ValueError(
                f"clip.maskclip_blocks: {cfg.maskclip_blocks} exceeds the {self.num_blocks} "
                f"blocks of {cfg.model_name}"
            )
        self.maskclip_blocks = cfg.maskclip_blocks or self.num_blocks
        self.num_heads = int(visual.transformer.resblocks[0].attn.num_heads)
        self.register_buffer("pixel_mean", torch.tensor(_OPENAI_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(_OPENAI_STD).view(1, 3, 1, 1), False)
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.cache_hits = 0
        self.cache_misses = 0
        self._freeze()

    def _freeze(self) -> None:
        super().train(False)
        for p in self.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> ClipModel:
        """CLIP stays frozen and in eval mode whatever the parent module does."""
        self._freeze()
        return self

    @property
    def device(self) -> torch.device:
        return self.clip.visual.class_embedding.device

    @property
    def dtype(self) -> torch.dtype:
        return self.clip.visual.class_embedding.dtype

    # ---- text ---------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """(n,) raw strings -> (n, E) float32 embeddings (no prompt, no cache, unnormalised)."""
        if not texts:
            return torch.zeros(0, self.embed_dim, device=self.device)
        out = []
        for i in range(0, len(texts), _TEXT_BATCH):
            tokens = self.tokenizer(list(texts[i : i + _TEXT_BATCH])).to(self.device)
            out.append(self.clip.encode_text(tokens).float())
        return torch.cat(out)

    def prompt(self, label: str) -> str:
        """The text embedded for a class name (the reference uses the raw name: template '{}')."""
        return self.prompt_template.replace("{}", label, 1)

    def text_embeddings(self, labels: Sequence[str]) -> Tensor:
        """(C,) class names -> (C, E) float32 embeddings, cached per label (LRU, thread-safe).

        Only labels missing from the cache are encoded, in one batch.
        """
        labels = [str(x) for x in labels]
        with self._cache_lock:
            missing = list(dict.fromkeys(x for x in labels if x not in self._cache))
            self.cache_hits += sum(1 for x in labels if x in self._cache)
        if missing:
            emb = self.encode_text([self.prompt(x) for x in missing])
            with self._cache_lock:
                self.cache_misses += len(missing)
                for name, e in zip(missing, emb):
                    self._cache[name] = e
        with self._cache_lock:
            rows = []
            for x in labels:
                self._cache.move_to_end(x)
                rows.append(self._cache[x])
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        if not rows:
            return torch.zeros(0, self.embed_dim, device=self.device)
        return torch.stack(rows)

    def null_embedding(self) -> Tensor:
        """(E,) embedding of the empty string (initial value of the learnable null class)."""
        return self.encode_text([""])[0]

    # ---- image --------------------------------------------------------------------------------

    def preprocess(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> resized to image_size, CLIP-normalised, model dtype."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W) RGB in [0, 1], got {tuple(image.shape)}")
        size = (self.image_size, self.image_size)
        x = image.to(self.device, torch.float32)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return ((x - self.pixel_mean) / self.pixel_std).to(self.dtype)

    @torch.no_grad()
    def dense_features(self, image: Tensor) -> DenseImageFeatures:
        """Class-token embedding (B, E) and patch embeddings (B, E, gh, gw) of the image."""
        visual = self.clip.visual
        x = visual.transformer(visual._embeds(self.preprocess(image)))
        x = visual.ln_post(x)
        if visual.proj is not None:
            x = x @ visual.proj
        g = self.image_size // self.patch_size
        patches = x[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, g, g)
        return DenseImageFeatures(x[:, 0].float(), patches.float())

    @torch.no_grad()
    def image_embedding(self, image: Tensor) -> Tensor:
        """(B, E) float32 = open_clip ``encode_image`` on the preprocessed image."""
        return self.clip.encode_image(self.preprocess(image)).float()

    def patch_attention_mask(self, mask_logits: Tensor) -> Tensor:
        """(B, Q, h, w) mask logits -> (B, Q, gh*gw) bool, True = the mask token may attend.

        Logits resized (bilinear) to image_size, sigmoid, max-pooled over each patch, >= 0.5.
        """
        size = (self.image_size, self.image_size)
        m = mask_logits.to(self.device, torch.float32)
        if tuple(m.shape[-2:]) != size:
            m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        pooled = F.max_pool2d(m.sigmoid(), kernel_size=self.patch_size, stride=self.patch_size)
        return (pooled >= 0.5).flatten(2)

    @torch.no_grad()
    def mask_embeddings(self, image: Tensor, mask_logits: Tensor) -> Tensor:
        """MaskCLIP: (B, 3, H, W) image in [0, 1] and (B, Q, h, w) mask logits -> (B, Q, E).

        A mask covering no patch yields the attention of its token to the class token only (the
        reference behaves the same way); the result is always finite.
        """
        return self.mask_embeddings_with_grad(image, mask_logits)

    def mask_embeddings_with_grad(self, image: Tensor, mask_logits: Tensor) -> Tensor:
        """:meth:`mask_embeddings` without ``no_grad``: the region-text pretraining of the
        demo's tiny CLIP (:mod:`xmask3d_ros.training.clip_pretrain`) trains through it."""
        if mask_logits.ndim != 4 or mask_logits.shape[0] != image.shape[0]:
            raise ValueError(
                f"mask_logits must be (B, Q, h, w) with B={image.shape[0]}, got "
                f"{tuple(mask_logits.shape)}"
            )
        b, q = mask_logits.shape[:2]
        if q == 0:
            return torch.zeros(b, 0, self.embed_dim, device=self.device)
        visual = self.clip.visual
        allowed = self.patch_attention_mask(mask_logits)  # (B, Q, P)
        x = visual._embeds(self.preprocess(image))  # (B, 1 + P, D)
        blocks = visual.transformer.resblocks
        first_masked = self.num_blocks - self.maskclip_blocks
        for blk in blocks[:first_masked]:
            x = blk(x)
        n_img = x.shape[1]
        x = torch.cat([x, x[:, :1].expand(-1, q, -1)], dim=1)  # mask tokens = CLS copies
        attn = self._maskclip_attn_bias(allowed, n_img, x.dtype)
        for blk in blocks[first_masked:]:
            x = blk(x, attn_mask=attn)
        tokens = visual.ln_post(x[:, n_img:])
        if visual.proj is not None:
            tokens = tokens @ visual.proj
        return tokens.float()

    def _maskclip_attn_bias(self, allowed: Tensor, n_img: int, dtype: torch.dtype) -> Tensor:
        """Additive (B * heads, T, T) attention bias for [CLS, patches, mask tokens]."""
        b, q, p = allowed.shape
        t = n_img + q
        block = torch.zeros(b, t, t, dtype=torch.bool, device=allowed.device)
        block[:, :, n_img:] = True  # nobody attends to a mask token (not even itself)
        block[:, n_img:, 1:n_img] = ~allowed  # mask token -> patches outside its mask
        bias = torch.zeros(b, t, t, dtype=dtype, device=allowed.device)
        # open_clip's block casts a bool mask to float (True -> +1), so pass an additive -inf bias.
        bias.masked_fill_(block, -math.inf)
        return bias.repeat_interleave(self.num_heads, dim=0)


def build_clip(
    cfg: ClipCfg,
    *,
    allow_random_init: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> ClipModel:
    """Build the frozen CLIP of ``cfg``; weights are checked before anything is constructed.

    Empty ``cfg.weights_path`` means random init (seeded with ``cfg.seed``) and needs
    ``allow_random_init``. Raises :class:`ClipWeightsError` for a missing/unreadable file and
    ValueError for an unknown architecture or mismatching keys (listing them).
    """
    arch = clip_architecture(cfg)
    state: dict[str, Tensor] | None = None
    if cfg.weights_path:
        state = load_clip_state_dict(cfg.weights_path)
    elif not allow_random_init:
        raise ClipWeightsError(
            f"clip.weights_path: empty, but random init is not allowed; give {CLIP_WEIGHTS_SOURCE}"
        )
    oc = _open_clip()
    from open_clip.model import CLIP

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = CLIP(**arch, quick_gelu=cfg.quick_gelu)
    if state is not None:
        own = model.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shapes = sorted(
            f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
            for k in set(own) & set(state)
            if state[k].shape != own[k].shape
        )
        if missing or unexpected or shapes:

            def head(items: list[str]) -> str:
                return f"{items[:6]}{' ...' if len(items) > 6 else ''}"

            raise ValueError(
                f"clip.weights_path: {cfg.weights_path} does not match open_clip {cfg.model_name}: "
                f"missing keys {head(missing)}, unexpected keys {head(unexpected)}, "
                f"shape mismatches {head(shapes)}"
            )
        model.load_state_dict(state, strict=True)
    context = int(arch["text_cfg"].get("context_length", 77))
    tokenizer = oc.tokenizer.SimpleTokenizer(context_length=context)
    return ClipModel(model.to(device=device, dtype=dtype), cfg, tokenizer).to(device)
