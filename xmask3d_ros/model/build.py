"""Factory and persistence of the XMask3D model (STYLE "For xmask3d_ros" 2, 5, 6).

* :func:`build_model` builds the ``tiny`` and the ``paper`` configuration with one code path.
  Every local weights path of the config is checked *before* anything is built (the error names
  the file, the config key and where such weights come from); nothing is ever downloaded.
  Built inside ``with torch.device("meta"):`` it allocates nothing (parameter counting).
* :func:`save_pretrained` writes ``config.yaml`` + ``model.safetensors`` holding only the
  XMask3D weights (3D branch, captioner, feature projections, mask generator, fusion; buffers
  such as the empty-prompt constant and BatchNorm statistics included). SD and CLIP weights are
  not stored: they ship separately, as in the reference.
* :func:`from_pretrained` reads such a folder back; :func:`load_weights` loads a checkpoint
  (a folder or a ``.safetensors`` file; a legacy torch file only through
  ``torch.load(weights_only=True)``), strict by default, listing missing/unexpected keys.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.config.schema import load_config, save_config
from xmask3d_ros.model.branch3d import Branch3D
from xmask3d_ros.model.clip import CLIP_WEIGHTS_SOURCE, ClipWeightsError, build_clip
from xmask3d_ros.model.diffusion import check_local_weights
from xmask3d_ros.model.errors import CheckpointMismatchError, WeightsError
from xmask3d_ros.model.fusion import FeatureFusion
from xmask3d_ros.model.mask_branch import build_mask_branch
from xmask3d_ros.model.xmask3d import XMask3D

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "XMASK3D_WEIGHTS_SOURCE",
    "LoadReport",
    "build_model",
    "check_weight_paths",
    "from_pretrained",
    "load_weights",
    "save_pretrained",
]

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
XMASK3D_WEIGHTS_SOURCE = (
    "an XMask3D checkpoint written by this project (xmask3d_ros.model.build.save_pretrained or "
    "the training command): a folder with config.yaml + model.safetensors, or the .safetensors "
    "file itself"
)
_UNCOND_SOURCE = (
    "the Stable Diffusion v1 text encoder's embedding of the empty prompt, made once offline "
    "with xmask3d_ros.model.captioner.empty_prompt_embedding + save_empty_prompt_embedding"
)
_SHOWN_KEYS = 10
_SEED_KEY = "build_seed"  # safetensors metadata: seed of the random-init parts


class LoadReport(NamedTuple):
    """Keys a non-strict :func:`load_weights` left alone."""

    missing: list[str]  # model keys the checkpoint lacks (they keep their current values)
    unexpected: list[str]  # checkpoint keys the model does not have (ignored)


def _checkpoint_file(path: str | Path, key: str) -> Path:
    """A project checkpoint: ``path`` itself or ``<path>/model.safetensors``; must exist."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / WEIGHTS_FILE
    if not p.is_file():
        raise WeightsError(f"{key}: {p} does not exist; expected {XMASK3D_WEIGHTS_SOURCE}")
    return p


def check_weight_paths(cfg: ModelConfig) -> None:
    """Fail fast if any weights path of ``cfg`` is missing (nothing is built or read)."""
    if cfg.weights_path:
        _checkpoint_file(cfg.weights_path, "weights_path")
    if cfg.clip.weights_path:
        p = Path(cfg.clip.weights_path).expanduser()
        if not p.is_file():
            raise ClipWeightsError(
                f"clip.weights_path: CLIP weights file {p} does not exist; expected "
                f"{CLIP_WEIGHTS_SOURCE}"
            )
    check_local_weights(cfg.diffusion)  # diffusion.unet_path, diffusion.vae_path
    if cfg.captioner.uncond_path:
        p = Path(cfg.captioner.uncond_path).expanduser()
        if not p.is_file():
            raise WeightsError(
                f"captioner.uncond_path: {p} does not exist; it holds {_UNCOND_SOURCE}"
            )


def build_model(
    cfg: ModelConfig, *, seed: int | None = 0, load_checkpoint: bool = True
) -> XMask3D:
    """Build XMask3D from ``cfg`` (tiny or paper).

    Local weights: SD UNet/VAE (``diffusion.*_path``), CLIP (``clip.weights_path``), the
    empty-prompt constant (``captioner.uncond_path``) and, unless ``load_checkpoint`` is False,
    the project checkpoint (``weights_path``). Empty paths mean random init, which the config
    only accepts with ``allow_random_init``. Random init is drawn from ``seed`` in a forked RNG
    (the global one is left alone), so a config and a seed always give the same model: a
    checkpoint of the tiny model, whose random SD is not stored, rebuilds exactly
    (``model.build_seed`` travels in the checkpoint's metadata). ``seed=None`` draws from the
    global RNG instead; CLIP always uses ``clip.seed``. Under ``torch.device("meta")`` the model
    is built without memory and without reading any weights (the checkpoint is skipped).
    """
    check_weight_paths(cfg)  # every missing file fails here, before anything is built
    device = torch.get_default_device()
    on_meta = device.type == "meta"
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        branch3d = Branch3D(cfg)
        branch2d = build_mask_branch(cfg)
        fusion = FeatureFusion(cfg.clip.embed_dim)
    clip = build_clip(cfg.clip, allow_random_init=cfg.allow_random_init, device=device)
    model = XMask3D(cfg, branch3d=branch3d, branch2d=branch2d, clip=clip, fusion=fusion)
    model.build_seed = seed
    if not on_meta:
        # reference: the learnable null class starts as CLIP's embedding of "" (§1.6)
        model.branch2d.mask_decoder.post_mask_embed.set_null_embed(clip.null_embedding())
    if cfg.weights_path and load_checkpoint and not on_meta:
        load_weights(model, cfg.weights_path)
    return model


def save_pretrained(
    model: XMask3D, directory: str | Path, *, dtype: torch.dtype | None = None
) -> Path:
    """Write ``<directory>/config.yaml`` and ``<directory>/model.safetensors``; returns the folder.

    The config is the model's with ``weights_path`` cleared (the weights are beside it); the
    metadata records ``model.build_seed`` so random-init frozen parts rebuild identically. Files
    are written to temporaries and renamed, so a crash never leaves a half-written checkpoint.
    ``dtype`` (e.g. float16 for a shipped inference checkpoint) casts the floating-point
    tensors; loading casts them back to the model's dtype.
    """
    from safetensors.torch import save_file

    folder = Path(directory).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", dtype if dtype is not None and v.is_floating_point() else v.dtype)
        .contiguous().clone()
        for k, v in model.trainable_state_dict().items()
    }
    tmp_weights = folder / (WEIGHTS_FILE + ".tmp")
    meta = {"format": "pt", "producer": "xmask3d_ros", "config_name": model.cfg.name}
    if model.build_seed is not None:
        meta[_SEED_KEY] = str(model.build_seed)
    save_file(state, str(tmp_weights), metadata=meta)
    tmp_cfg = folder / (CONFIG_FILE + ".tmp")
    save_config(dataclasses.replace(model.cfg, weights_path=""), tmp_cfg)
    os.replace(tmp_weights, folder / WEIGHTS_FILE)
    os.replace(tmp_cfg, folder / CONFIG_FILE)
    return folder


def from_pretrained(directory: str | Path, overrides: Sequence[str] = ()) -> XMask3D:
    """Build the model of ``<directory>/config.yaml`` and load ``model.safetensors`` (strict).

    ``overrides`` (``key.path=value``) adapt the saved config, e.g. to point
    ``clip.weights_path`` at this machine's CLIP file. A relative ``clip.weights_path`` is
    resolved against ``directory`` (a checkpoint shipping its own CLIP, like the demo's).
    """
    folder = Path(directory).expanduser()
    cfg_file = folder / CONFIG_FILE
    if not cfg_file.is_file():
        raise WeightsError(
            f"from_pretrained: {cfg_file} does not exist; expected {XMASK3D_WEIGHTS_SOURCE}"
        )
    weights = _checkpoint_file(folder, "from_pretrained")
    cfg = load_config(ModelConfig, cfg_file, overrides)
    clip_path = Path(cfg.clip.weights_path).expanduser()
    if cfg.clip.weights_path and not clip_path.is_absolute():
        # a checkpoint that ships its own CLIP (the demo) names it relative to its folder
        clip = dataclasses.replace(cfg.clip, weights_path=str(folder / clip_path))
        cfg = dataclasses.replace(cfg, clip=clip)
    return build_model(
        dataclasses.replace(cfg, weights_path=str(weights)), seed=_saved_seed(weights)
    )


def _saved_seed(path: Path) -> int:
    """The ``build_seed`` recorded by :func:`save_pretrained` (0 when absent)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # noqa: BLE001 - a corrupt header is a weights problem
        raise WeightsError(f"from_pretrained: cannot read {path} ({err})") from err
    try:
        return int(meta.get(_SEED_KEY, 0))
    except ValueError:
        return 0


def _read_state_dict(path: Path, key: str) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:  # legacy torch file: never unpickle arbitrary objects
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure becomes one clear message
        raise WeightsError(
            f"{key}: cannot read {path} ({type(err).__name__}: {err}); expected "
            f"{XMASK3D_WEIGHTS_SOURCE}"
        ) from err
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise WeightsError(f"{key}: {path} does not hold a tensor state dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _head(keys: list[str]) -> str:
    more = f" ... (+{len(keys) - _SHOWN_KEYS})" if len(keys) > _SHOWN_KEYS else ""
    return f"{keys[:_SHOWN_KEYS]}{more}"


def load_weights(
    model: XMask3D, path: str | Path, *, strict: bool = True, key: str = "weights_path"
) -> LoadReport:
    """Load a project checkpoint (folder or file) into ``model``'s trainable part, in place.

    Strict (default): any missing or unexpected key raises :class:`CheckpointMismatchError`
    listing them; a shape mismatch always does. Sparse kernels stored without ME's unit kernel
    axis ((C_in, C_out) vs (1, C_in, C_out)) are reshaped, so either backend's file loads.
    """
    file = _checkpoint_file(path, key)
    state = _read_state_dict(file, key)
    own = model.trainable_state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if strict and (missing or unexpected):
        raise CheckpointMismatchError(
            f"{key}: {file} does not match this model ({model.cfg.name}): "
            f"{len(missing)} missing keys {_head(missing)}, {len(unexpected)} unexpected keys "
            f"{_head(unexpected)}"
        )
    load: dict[str, torch.Tensor] = {}
    bad = []
    for k in sorted(set(own) & set(state)):
        value, ref = state[k], own[k]
        if value.shape != ref.shape:
            squeeze = [d for d in value.shape if d != 1] == [d for d in ref.shape if d != 1]
            if not (k.endswith("kernel") and squeeze):
                bad.append(f"{k} {tuple(value.shape)} vs {tuple(ref.shape)}")
                continue
            value = value.reshape(ref.shape)
        load[k] = value
    if bad:
        raise CheckpointMismatchError(
            f"{key}: {file} has tensors of the wrong shape for this model ({model.cfg.name}): "
            f"{_head(bad)}"
        )
    model.load_state_dict(load, strict=False)
    return LoadReport(missing, unexpected)
