"""Implicit 3D captioner (reference-notes §1.4): global 3D feature -> UNet condition.

The max-pooled 3D bottleneck vector (B, E) replaces ODISE's CLIP image embedding as an
"implicit caption". Two zero-initialised tanh gates blend it into the frozen UNet's inputs:

    context  = uncond + tanh(alpha_cond) * clip_project(prefix)                (B, 77, 768)
    time emb = tanh(alpha_cond_time_embed) * time_embed_project(prefix)[:, 0]  (B, 1280)

``uncond`` is the SD text encoder's embedding of the empty prompt. It is a constant: computed
once offline (:func:`empty_prompt_embedding` from a local diffusers SD folder, saved with
:func:`save_empty_prompt_embedding`) and stored as a persistent buffer, so no text encoder and no
network are needed at run time. With random init it is a seeded normal constant. Because both
gates start at zero, the UNet initially sees exactly the empty-prompt condition.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from xmask3d_ros.config.model import CaptionerCfg
from xmask3d_ros.model.diffusion import WeightsError

__all__ = [
    "UNCOND_KEY",
    "ImplicitCaptioner",
    "PositionalLinear",
    "empty_prompt_embedding",
    "load_empty_prompt_embedding",
    "save_empty_prompt_embedding",
]

UNCOND_KEY = "uncond_embedding"  # tensor name inside the safetensors file
_RANDOM_UNCOND_SEED = 0  # seed of the stand-in constant when no SD text embedding is given


class PositionalLinear(nn.Module):
    """Linear in -> out broadcast to ``seq_len`` tokens plus a learnable positional table.

    (B, in) -> (B, seq_len, out); the table is trunc-normal(0.02) as in ODISE.
    """

    def __init__(
        self, in_features: int, out_features: int, seq_len: int, bias: bool = True
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.positional_embedding = nn.Parameter(torch.zeros(1, seq_len, out_features))
        nn.init.trunc_normal_(self.positional_embedding, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).unsqueeze(1) + self.positional_embedding


class ImplicitCaptioner(nn.Module):
    """``forward(prefix (B, prefix_dim)) -> (context (B, T, D), time_cond (B, D_t))``.

    T = ``context_tokens``, D = ``cross_attention_dim``, D_t = ``time_embed_dim``; the time
    condition is added to the UNet's own timestep embedding (one diffusion step: seq_len 1).
    """

    def __init__(
        self, cfg: CaptionerCfg, *, prefix_dim: int, uncond: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        shape = (1, cfg.context_tokens, cfg.cross_attention_dim)
        if uncond is None:
            gen = torch.Generator(device="cpu").manual_seed(_RANDOM_UNCOND_SEED)
            uncond = torch.randn(shape, generator=gen, device="cpu")
        if tuple(uncond.shape) != shape:
            raise ValueError(
                f"captioner.uncond_path: embedding of shape {tuple(uncond.shape)}, "
                f"expected {shape} "
                "(captioner.context_tokens, captioner.cross_attention_dim)"
            )
        self.register_buffer("uncond_embedding", uncond.detach().clone().float())
        self.clip_project = PositionalLinear(
            prefix_dim, cfg.cross_attention_dim, cfg.context_tokens
        )
        self.alpha_cond = nn.Parameter(torch.zeros(shape))
        self.time_embed_project = PositionalLinear(prefix_dim, cfg.time_embed_dim, 1)
        self.alpha_cond_time_embed = nn.Parameter(torch.zeros(cfg.time_embed_dim))

    def forward(self, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if prefix.dim() != 2:
            raise ValueError(f"prefix must be (B, E), got shape {tuple(prefix.shape)}")
        uncond = self.uncond_embedding.to(prefix)  # device too: a meta-built model keeps it on cpu
        context = uncond + torch.tanh(self.alpha_cond) * self.clip_project(prefix)
        time_cond = torch.tanh(self.alpha_cond_time_embed) * self.time_embed_project(prefix)[:, 0]
        return context, time_cond


def save_empty_prompt_embedding(path: str | Path, embedding: torch.Tensor) -> None:
    """Write the (1, T, D) empty-prompt embedding as ``<path>`` (safetensors)."""
    from safetensors.torch import save_file

    save_file({UNCOND_KEY: embedding.detach().float().contiguous().cpu()}, str(path))


def load_empty_prompt_embedding(
    path: str | Path, *, key: str = "captioner.uncond_path"
) -> torch.Tensor:
    """Read the tensor written by :func:`save_empty_prompt_embedding`; errors name ``key``."""
    from safetensors import safe_open

    file = Path(path).expanduser()
    if not file.is_file():
        raise WeightsError(
            f"{key}: {file} does not exist. It holds the Stable Diffusion v1 text encoder's "
            "embedding of the empty prompt, made once offline from a local diffusers SD folder "
            "with xmask3d_ros.model.captioner.empty_prompt_embedding + save_empty_prompt_embedding"
        )
    with safe_open(str(file), framework="pt") as f:
        if UNCOND_KEY not in f.keys():  # noqa: SIM118 - safe_open has no __contains__
            raise WeightsError(
                f"{key}: {file} has no tensor {UNCOND_KEY!r} (found {list(f.keys())})"
            )
        return f.get_tensor(UNCOND_KEY)


@torch.no_grad()
def empty_prompt_embedding(sd_folder: str | Path, *, max_length: int = 77) -> torch.Tensor:
    """SD v1's text-encoder output for "" (1, 77, 768) from ``<sd_folder>/tokenizer, text_encoder``.

    Offline tool (needs transformers and a local diffusers Stable Diffusion v1.x folder; nothing
    is downloaded). Same as LDM's ``FrozenCLIPEmbedder``: pad to 77 tokens, last hidden state.
    """
    from xmask3d_ros.model.compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from transformers import CLIPTextModel, CLIPTokenizer

    root = Path(sd_folder).expanduser()
    for sub in ("tokenizer", "text_encoder"):
        if not (root / sub).is_dir():
            raise WeightsError(
                f"{root / sub} does not exist: expected a Stable Diffusion v1.x diffusers folder "
                "with tokenizer/ and text_encoder/"
            )
    tokenizer = CLIPTokenizer.from_pretrained(str(root / "tokenizer"), local_files_only=True)
    encoder = CLIPTextModel.from_pretrained(str(root / "text_encoder"), local_files_only=True)
    tokens = tokenizer(
        [""], truncation=True, max_length=max_length, padding="max_length", return_tensors="pt"
    )
    return encoder.eval()(input_ids=tokens["input_ids"]).last_hidden_state.float()
