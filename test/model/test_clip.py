"""CLIP wrapper: text cache, dense features, MaskCLIP, weights loading, the paper architecture."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from xmask3d_ros.config.model import ClipCfg
from xmask3d_ros.model.clip import (
    ClipModel,
    ClipWeightsError,
    build_clip,
    clip_architecture,
)

TINY = ClipCfg(model_name="tiny", embed_dim=64, image_size=64, seed=3)


@pytest.fixture(scope="module")
def tiny() -> ClipModel:
    return build_clip(TINY, allow_random_init=True)


def _image(b: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 40, 56, generator=g)  # not square: resized like the reference


# ---- MaskCLIP ----------------------------------------------------------------------------------


def _reference_maskclip(m: ClipModel, image: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Transcription of the reference MaskCLIP (ODISE/XMask3D clip.py) with hand-written attention.

    Token order as in the reference: [mask tokens, CLS, patches]; boolean mask built exactly as
    ``encode_image_with_mask`` does (True = blocked); attention computed from the block weights.
    """
    v = m.clip.visual
    x_img = F.interpolate(image, size=(m.image_size,) * 2, mode="bilinear", align_corners=False)
    x_img = (x_img - m.pixel_mean) / m.pixel_std
    mask = F.interpolate(mask_logits, size=(m.image_size,) * 2, mode="bilinear", align_corners=False)
    patch_mask = F.max_pool2d(mask.sigmoid(), kernel_size=m.patch_size, stride=m.patch_size)
    b, q = mask_logits.shape[:2]
    blocked_patches = (patch_mask < 0.5).reshape(b, q, -1)
    x = v.conv1(x_img).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(b, 1, -1), x], dim=1) + v.positional_embedding
    x = v.ln_pre(x)
    x = torch.cat([x[:, :1].expand(-1, q, -1), x], dim=1)
    n_all = x.shape[1]
    n_img_tokens = n_all - q - 1
    blocked = torch.zeros(b, n_all, n_all, dtype=torch.bool)
    blocked[:, :, :q] = True
    blocked[:, :q, -n_img_tokens:] = blocked_patches
    for blk in v.transformer.resblocks:
        attn = blk.attn
        h = attn.num_heads
        y = blk.ln_1(x)
        qkv = F.linear(y, attn.in_proj_weight, attn.in_proj_bias)
        qh, kh, vh = (t.reshape(b, n_all, h, -1).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
        scores = qh @ kh.transpose(-1, -2) / (qh.shape[-1] ** 0.5)
        scores = scores.masked_fill(blocked[:, None], float("-inf"))
        out = (scores.softmax(-1) @ vh).transpose(1, 2).reshape(b, n_all, -1)
        x = x + attn.out_proj(out)
        x = x + blk.mlp(blk.ln_2(x))
    return v.ln_post(x[:, :q]) @ v.proj


def test_maskclip_all_ones_mask_equals_image_cls_embedding(tiny: ClipModel) -> None:
    """A mask covering every patch gives its token the same keys as CLS at every block and the
    same input (a CLS copy), so by induction it equals CLIP's own image embedding."""
    image = _image()
    full = torch.full((2, 3, 16, 16), 20.0)
    emb = tiny.mask_embeddings(image, full)
    cls = tiny.image_embedding(image)
    dense = tiny.dense_features(image)
    assert emb.shape == (2, 3, 64)
    torch.testing.assert_close(emb, cls[:, None].expand_as(emb), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dense.cls, cls, atol=1e-5, rtol=1e-5)
    assert dense.patches.shape == (2, 64, 8, 8)


def test_maskclip_equals_reference_transcription(tiny: ClipModel) -> None:
    g = torch.Generator().manual_seed(1)
    image = _image(seed=2)
    logits = torch.randn(2, 5, 16, 16, generator=g) * 4.0
    logits[:, 3] = -20.0  # covers no patch: token attends to CLS only
    logits[:, 4] = 20.0
    got = tiny.mask_embeddings(image, logits)
    with torch.no_grad():
        want = _reference_maskclip(tiny, image, logits)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    # masks differ -> embeddings differ (the mask really restricts attention)
    assert (got[:, 0] - got[:, 4]).abs().max() > 1e-3


def test_maskclip_last_blocks_variant() -> None:
    m = build_clip(dataclasses.replace(TINY, maskclip_blocks=1), allow_random_init=True)
    image = _image()
    emb = m.mask_embeddings(image, torch.full((2, 2, 8, 8), 20.0))
    torch.testing.assert_close(emb[:, 0], m.image_embedding(image), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="clip.maskclip_blocks"):
        build_clip(dataclasses.replace(TINY, maskclip_blocks=9), allow_random_init=True)


# ---- text --------------------------------------------------------------------------------------


def test_text_cache_hits_do_not_reencode(tiny: ClipModel, monkeypatch: pytest.MonkeyPatch) -> None:
    m = build_clip(dataclasses.replace(TINY, text_cache_size=3), allow_random_init=True)
    calls: list[int] = []
    real = m.clip.encode_text

    def spy(tokens: torch.Tensor, *a: object, **k: object) -> torch.Tensor:
        calls.append(tokens.shape[0])
        return real(tokens, *a, **k)

    monkeypatch.setattr(m.clip, "encode_text", spy)
    e1 = m.text_embeddings(["chair", "table", "chair"])
    assert calls == [2] and e1.shape == (3, 64)
    torch.testing.assert_close(e1[0], e1[2])
    e2 = m.text_embeddings(["table", "chair"])
    assert calls == [2]  # all cached
    torch.testing.assert_close(e2, e1[[1, 0]])
    m.text_embeddings(["sofa", "chair"])
    assert calls == [2, 1]
    m.text_embeddings(["desk"])  # capacity 3: evicts the least recently used ("table")
    m.text_embeddings(["table"])
    assert calls == [2, 1, 1, 1]
    assert m.text_embeddings([]).shape == (0, 64)


def test_prompt_handling_raw_names_and_template(tiny: ClipModel) -> None:
    raw = tiny.text_embeddings(["shower curtain"])[0]
    torch.testing.assert_close(raw, tiny.encode_text(["shower curtain"])[0])
    templ = build_clip(dataclasses.replace(TINY, prompt_template="a {} in a scene"), allow_random_init=True)
    assert templ.prompt("sofa") == "a sofa in a scene"
    torch.testing.assert_close(templ.text_embeddings(["sofa"])[0], tiny.encode_text(["a sofa in a scene"])[0])
    assert tiny.null_embedding().shape == (64,)


# ---- construction and weights -----------------------------------------------------------------


def test_seeded_random_init_and_frozen(tiny: ClipModel) -> None:
    again = build_clip(TINY, allow_random_init=True)
    other = build_clip(dataclasses.replace(TINY, seed=4), allow_random_init=True)
    image = _image()
    torch.testing.assert_close(again.image_embedding(image), tiny.image_embedding(image))
    assert not torch.allclose(other.image_embedding(image), tiny.image_embedding(image))
    assert not any(p.requires_grad for p in tiny.parameters())
    wrapper = torch.nn.Sequential(tiny)
    wrapper.train()
    assert not tiny.training and not tiny.clip.training
    with pytest.raises(ClipWeightsError, match="clip.weights_path: empty"):
        build_clip(TINY)


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "wrapped"])
def test_weights_load_from_local_file(tiny: ClipModel, tmp_path: Path, fmt: str) -> None:
    state = {k: v.clone().contiguous() for k, v in tiny.clip.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "clip.safetensors"
        save_file(state, str(path))
    elif fmt == "pt":
        path = tmp_path / "clip.bin"
        torch.save(state, path)
    else:
        path = tmp_path / "ckpt.pt"
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    loaded = build_clip(dataclasses.replace(TINY, seed=9, weights_path=str(path)))
    image = _image()
    torch.testing.assert_close(loaded.image_embedding(image), tiny.image_embedding(image))
    torch.testing.assert_close(loaded.text_embeddings(["bed"]), tiny.text_embeddings(["bed"]))


def test_missing_weights_fail_before_construction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import open_clip.model

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("model constructed before the weights check")

    monkeypatch.setattr(open_clip.model, "CLIP", boom)
    path = tmp_path / "nope" / "open_clip_vit_l_14.safetensors"
    cfg = ClipCfg(weights_path=str(path))  # the paper architecture
    with pytest.raises(ClipWeightsError) as err:
        build_clip(cfg)
    msg = str(err.value)
    assert str(path) in msg and "clip.weights_path" in msg
    assert "ViT-L-14" in msg and "openai" in msg and "nothing is downloaded" in msg


def test_bad_weights_are_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ClipWeightsError, match="cannot read CLIP weights"):
        build_clip(dataclasses.replace(TINY, weights_path=str(junk)))
    wrong = tmp_path / "wrong.pt"
    torch.save({"visual.proj": torch.zeros(2, 2)}, wrong)
    with pytest.raises(ValueError, match="missing keys"):
        build_clip(dataclasses.replace(TINY, weights_path=str(wrong)))


def test_paper_architecture_parameter_count_on_meta() -> None:
    from open_clip.model import CLIP

    arch = clip_architecture(ClipCfg())  # ViT-L-14, 224 px, 768-d
    with torch.device("meta"):
        model = CLIP(**arch, quick_gelu=True)
    n = sum(p.numel() for p in model.parameters())
    assert n == 427_616_513  # open_clip ViT-L-14: 427.6 M
    assert sum(p.numel() for p in model.visual.parameters()) == 303_966_208


def test_architecture_errors() -> None:
    with pytest.raises(ValueError, match="clip.model_name: 'ViT-Nope'"):
        clip_architecture(ClipCfg(model_name="ViT-Nope"))
    with pytest.raises(ValueError, match="clip.embed_dim: 64 differs"):
        clip_architecture(ClipCfg(embed_dim=64))
