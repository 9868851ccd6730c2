"""Frozen SD feature extractor: SD v1 sizes, tap channels/strides (§1.5), local weights, frozen."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from xmask3d_ros.config.model import DiffusionCfg
from xmask3d_ros.config.schema import ConfigError
from xmask3d_ros.model.compat import ensure_torchvision_importable
from xmask3d_ros.model.diffusion import (
    TAPS,
    DiffusionFeatureExtractor,
    WeightsError,
    build_unet,
    build_vae,
)

ensure_torchvision_importable()
diffusers = pytest.importorskip("diffusers")

PAPER = DiffusionCfg()  # defaults = paper: sd_v1 layout, 512 px, t = 0, seed 42, 512-d features
TINY = DiffusionCfg(layout="tiny", image_size=64, feature_dim=32)

# Stable Diffusion v1 as published (CompVis v1-inference.yaml / diffusers unet/config.json)
SD_V1_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SD_V1_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def paper_meta() -> DiffusionFeatureExtractor:
    with torch.device("meta"):
        unet = build_unet(PAPER, cross_attention_dim=768)
        vae = build_vae(PAPER)
        return DiffusionFeatureExtractor(PAPER, unet=unet, vae=vae)


@pytest.fixture(scope="module")
def tiny() -> DiffusionFeatureExtractor:
    torch.manual_seed(0)
    unet = build_unet(TINY, cross_attention_dim=64)
    return DiffusionFeatureExtractor(TINY, unet=unet, vae=build_vae(TINY))


def test_paper_layout_has_the_published_sd_v1_sizes(paper_meta: DiffusionFeatureExtractor) -> None:
    with torch.device("meta"):
        ref_unet = diffusers.UNet2DConditionModel(**SD_V1_UNET)
        ref_vae = diffusers.AutoencoderKL(**SD_V1_VAE)
    # published: SD v1 UNet 859.52M, VAE 83.65M parameters
    assert _count(ref_unet) == 859_520_964 and round(_count(ref_unet) / 1e6, 2) == 859.52
    assert _count(ref_vae) == 83_653_863 and round(_count(ref_vae) / 1e6, 2) == 83.65
    # same tensors as the published layout, so real SD v1 weights load without remapping
    shapes = {k: v.shape for k, v in paper_meta.unet.state_dict().items()}
    assert shapes == {k: v.shape for k, v in ref_unet.state_dict().items()}
    shapes = {k: v.shape for k, v in paper_meta.vae.state_dict().items()}
    assert shapes == {k: v.shape for k, v in ref_vae.state_dict().items()}
    assert paper_meta.time_embed_dim == 1280 and paper_meta.scaling_factor == pytest.approx(0.18215)


def test_paper_taps_channels_and_strides(paper_meta: DiffusionFeatureExtractor) -> None:
    """§1.5: VAE enc 512 @ 4/8, UNet 2560/1920/960/640 @ 64(->32)/32/16/8, VAE dec 512 @ 8/4."""
    ex = paper_meta
    image = torch.empty(1, 3, 512, 512, device="meta")
    context = torch.empty(1, 77, 768, device="meta")
    with torch.no_grad():  # shape inference on the meta device: no memory, no compute
        vae_taps, mean = ex._vae_taps(image)
        unet_taps = ex._unet_taps(mean, context, torch.empty(1, 1280, device="meta"))
        feats = ex(image, context, torch.empty(1, 1280, device="meta"))
    taps = {**vae_taps, **unet_taps}
    expected = {
        "vae_encoder.5": (512, 4),
        "vae_encoder.7": (512, 8),
        "unet_output.2": (2560, 64),
        "unet_output.5": (1920, 32),
        "unet_output.8": (960, 16),
        "unet_output.11": (640, 8),
        "vae_decoder.2": (512, 8),
        "vae_decoder.5": (512, 4),
    }
    assert {k: (v.shape[1], 512 // v.shape[-1]) for k, v in taps.items()} == expected
    assert ex.tap_channels == tuple(expected[t.name][0] for t in TAPS)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "s2": (1, 512, 128, 128),
        "s3": (1, 512, 64, 64),
        "s4": (1, 512, 32, 32),
        "s5": (1, 512, 16, 16),
    }


def test_tiny_features_and_fixed_noise(tiny: DiffusionFeatureExtractor) -> None:
    # tiny keeps SD v1's block structure, so the same blocks are tapped (narrower channels)
    c0, c1, c2, c3 = TINY.tiny_unet_channels
    v = TINY.tiny_vae_channels
    assert tiny.tap_channels == (v[2], v[3], c3 + c2, c2 + c1, c1 + c0, 2 * c0, v[3], v[3])
    expected_noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(42))
    assert torch.equal(tiny.shared_noise, expected_noise)
    assert tiny.signal_scale == pytest.approx((1 - 0.00085) ** 0.5)  # t = 0 of ldm_linear
    torch.manual_seed(1)
    image = torch.rand(2, 3, 64, 64)
    context = torch.randn(2, 77, 64)
    with torch.no_grad():
        a = tiny(image, context, torch.zeros(2, 128))
        b = tiny(image, context, None)
    assert {k: tuple(t.shape) for k, t in a.items()} == {
        "s2": (2, 32, 16, 16),
        "s3": (2, 32, 8, 8),
        "s4": (2, 32, 4, 4),
        "s5": (2, 32, 2, 2),
    }
    assert all(torch.isfinite(t).all() for t in a.values())
    for k in a:  # deterministic, and a zero time condition is no condition
        torch.testing.assert_close(a[k], b[k])
    with torch.no_grad():
        c = tiny(image, context, torch.ones(2, 128))
    assert not torch.allclose(a["s5"], c["s5"])  # the time condition reaches the UNet


def test_frozen_parts(tiny: DiffusionFeatureExtractor) -> None:
    assert not any(p.requires_grad for p in tiny.unet.parameters())
    assert not any(p.requires_grad for p in tiny.vae.parameters())
    assert all(p.requires_grad for p in tiny.feature_projections.parameters())
    tiny.train()
    assert not tiny.unet.training and not tiny.vae.training and tiny.feature_projections.training
    tiny.eval()


def test_local_weights_load_and_match(tmp_path: Path, tiny: DiffusionFeatureExtractor) -> None:
    tiny.unet.save_pretrained(
        tmp_path / "unet"
    )  # config.json + diffusion_pytorch_model.safetensors
    tiny.vae.save_pretrained(tmp_path / "vae")
    cfg = dataclasses.replace(
        TINY, unet_path=str(tmp_path / "unet"), vae_path=str(tmp_path / "vae")
    )
    unet, vae = build_unet(cfg, cross_attention_dim=64), build_vae(cfg)
    assert not any(p.requires_grad for p in unet.parameters()) and not unet.training
    for a, b in zip(tiny.unet.state_dict().values(), unet.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(tiny.vae.state_dict().values(), vae.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match=r"captioner\.cross_attention_dim: 32 differs"):
        build_unet(cfg, cross_attention_dim=32)


def test_missing_or_unusable_weights_fail_with_the_key(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_sd" / "unet"
    with pytest.raises(WeightsError) as err:
        build_unet(dataclasses.replace(PAPER, unet_path=str(missing)), cross_attention_dim=768)
    text = str(err.value)
    assert text.startswith("diffusion.unet_path: ") and str(missing) in text
    assert "Stable Diffusion v1.x" in text and "sd-v1-3.ckpt" in text
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match=r"diffusion.vae_path: .* has no .safetensors weights"):
        build_vae(dataclasses.replace(PAPER, vae_path=str(tmp_path / "vae")))


def test_a_non_sd_v1_layout_is_refused(tmp_path: Path) -> None:
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 32, 64),
        layers_per_block=2,
        cross_attention_dim=64,
        attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 2,
    )
    unet.save_pretrained(tmp_path / "unet")
    with pytest.raises(
        ConfigError,
        match=r"diffusion\.unet_path: the UNet does not have Stable Diffusion v1's layout",
    ):
        build_unet(
            dataclasses.replace(TINY, unet_path=str(tmp_path / "unet")), cross_attention_dim=64
        )


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="image_size: 100 must be a multiple of 64"):
        DiffusionCfg(image_size=100)
    with pytest.raises(
        ConfigError, match=r"tiny_unet_channels: .* divisible by tiny_attention_heads=3"
    ):
        DiffusionCfg(tiny_attention_heads=3)
