"""The whole 2D branch on the tiny config: shapes, finite forward/backward, frozen vs trainable."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from xmask3d_ros.config import load_config
from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.config.paths import resolve_model_config
from xmask3d_ros.config.schema import ConfigError
from xmask3d_ros.model.captioner import save_empty_prompt_embedding
from xmask3d_ros.model.compat import ensure_torchvision_importable
from xmask3d_ros.model.diffusion import WeightsError
from xmask3d_ros.model.mask_branch import MaskBranch, build_mask_branch

ensure_torchvision_importable()
pytest.importorskip("diffusers")


def _tiny(*overrides: str) -> ModelConfig:
    return load_config(ModelConfig, resolve_model_config("tiny"), overrides)


@pytest.fixture(scope="module")
def branch() -> MaskBranch:
    torch.manual_seed(0)
    return build_mask_branch(_tiny())


def test_forward_shapes_and_resize(branch: MaskBranch) -> None:
    cfg = _tiny()
    branch.eval()
    image = torch.rand(2, 3, 48, 64)  # any size: resized to diffusion.image_size (64)
    prefix = torch.randn(2, cfg.clip.embed_dim)
    with torch.no_grad():
        branch(image[:1], prefix[:1])  # warm-up
        start = time.perf_counter()
        out = branch(image[:1], prefix[:1])
        elapsed = time.perf_counter() - start
        out = branch(image, prefix)
    print(f"tiny 2D branch forward, 1 image 64x64, CPU: {elapsed * 1000:.0f} ms")
    q, e, s = cfg.mask_generator.num_queries, cfg.clip.embed_dim, cfg.diffusion.image_size // 4
    assert out.pred_masks.shape == (2, q, s, s) and out.mask_embed.shape == (2, q, e)
    assert out.mask_features.shape == (2, cfg.mask_generator.mask_dim, s, s)
    assert len(out.aux) == cfg.mask_generator.dec_layers
    assert torch.isfinite(out.pred_masks).all() and torch.isfinite(out.mask_embed).all()
    assert branch.resize_masks(out.pred_masks).shape == (2, q, *cfg.mask_generator.mask_shape)
    with pytest.raises(ValueError, match="prefix batch 1 differs"):
        branch(image, prefix[:1])


def test_backward_reaches_trainable_parts_only(branch: MaskBranch) -> None:
    branch.train()
    branch.zero_grad(set_to_none=True)
    # gates as after some training, so every captioner weight is on the gradient path
    with torch.no_grad():
        branch.captioner.alpha_cond.fill_(0.1)
        branch.captioner.alpha_cond_time_embed.fill_(0.1)
    torch.manual_seed(2)
    image, prefix = torch.rand(2, 3, 64, 64), torch.randn(2, 64)
    out = branch(image, prefix)
    text = torch.randn(5, 64)
    pme = branch.mask_decoder.post_mask_embed
    loss = torch.zeros(())
    for pred in (*out.aux, out):
        logits = pme.class_logits(pred.mask_embed, text)
        loss = loss + torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.arange(16) % 6)
        loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(
            pred.pred_masks, (torch.rand_like(pred.pred_masks) > 0.5).float()
        )
    loss.backward()
    assert torch.isfinite(loss)
    names = dict(branch.trainable_named_parameters())
    assert names and not any(MaskBranch.is_frozen(n) for n in names)
    for prefix_name in (
        "captioner.",
        "extractor.feature_projections.",
        "pixel_decoder.",
        "mask_decoder.",
    ):
        assert any(n.startswith(prefix_name) for n in names), prefix_name
    no_grad = [n for n, p in names.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []
    # the captioner learns through the frozen UNet
    for n in (
        "captioner.alpha_cond",
        "captioner.clip_project.linear.weight",
        "captioner.alpha_cond_time_embed",
    ):
        assert names[n].grad.abs().sum() > 0, n
    frozen = dict(branch.frozen_named_parameters())
    assert {n.split(".")[1] for n in frozen} == {"unet", "vae"}
    assert all(not p.requires_grad and p.grad is None for p in frozen.values())
    assert not branch.extractor.unet.training and not branch.extractor.vae.training

    # an optimiser over trainable_parameters() never touches SD
    before = {n: p.detach().clone() for n, p in list(frozen.items())[:5]}
    opt = torch.optim.AdamW(branch.trainable_parameters(), lr=1e-3)
    moved = branch.captioner.alpha_cond.detach().clone()
    opt.step()
    assert not torch.equal(moved, branch.captioner.alpha_cond)
    assert all(torch.equal(before[n], frozen[n]) for n in before)
    branch.zero_grad(set_to_none=True)


def test_gradient_reaches_the_captioner_at_initialisation() -> None:
    torch.manual_seed(3)
    branch = build_mask_branch(_tiny()).train()
    out = branch(torch.rand(1, 3, 64, 64), torch.randn(1, 64))
    (out.mask_embed.square().mean() + out.pred_masks.mean()).backward()
    # zero gates: the condition is exactly the empty prompt, but the gates themselves learn
    assert branch.captioner.alpha_cond.grad.abs().sum() > 0
    assert branch.captioner.alpha_cond_time_embed.grad.abs().sum() > 0


def test_checkpoint_state_excludes_sd(branch: MaskBranch) -> None:
    state = branch.trainable_state_dict()
    assert not any(k.startswith(MaskBranch.FROZEN_PREFIXES) for k in state)
    assert "captioner.uncond_embedding" in state  # the empty-prompt constant travels along
    assert "extractor.shared_noise" not in state  # a function of the config


def test_uncond_path_and_missing_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    emb = torch.randn(1, 77, 64)
    save_empty_prompt_embedding(tmp_path / "u.safetensors", emb)
    torch.manual_seed(0)
    branch = build_mask_branch(_tiny(f"captioner.uncond_path={tmp_path / 'u.safetensors'}"))
    assert torch.equal(branch.captioner.uncond_embedding, emb)

    import xmask3d_ros.model.mask_branch as mb

    def _no_build(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a model was built before the weights were checked")

    monkeypatch.setattr(mb, "build_vae", _no_build)
    monkeypatch.setattr(mb, "build_unet", _no_build)
    with pytest.raises(WeightsError, match=r"^diffusion.vae_path: .*nope.* does not exist"):
        build_mask_branch(_tiny(f"diffusion.vae_path={tmp_path / 'nope'}"))
    with pytest.raises(WeightsError, match=r"^diffusion.unet_path: .*Stable Diffusion v1.x"):
        build_mask_branch(_tiny(f"diffusion.unet_path={tmp_path / 'nope'}"))


def test_time_embed_width_must_match_the_unet() -> None:
    with pytest.raises(ConfigError, match=r"captioner\.time_embed_dim: 96 differs"):
        build_mask_branch(_tiny("captioner.time_embed_dim=96"))
