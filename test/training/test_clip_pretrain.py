"""Region-text pretraining of the tiny CLIP: the MaskCLIP path trains, and the weights travel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from xmask3d_ros.config.model import ClipCfg
from xmask3d_ros.config.schema import from_dict
from xmask3d_ros.config.training import ClipPretrainCfg
from xmask3d_ros.data.labels import label_set
from xmask3d_ros.data.partitions import get_partition
from xmask3d_ros.model.clip import build_clip
from xmask3d_ros.training.clip_pretrain import (
    load_region_bank,
    pretrain_clip,
    region_accuracy,
    save_clip_weights,
)

_TINY = {"model_name": "tiny", "embed_dim": 32, "image_size": 32,
         "arch": {"text_width": 32, "vision_width": 32, "patch_size": 8}}


def _bank(root: Path):
    names = list(get_partition("synthetic_B15N4").classes)
    return load_region_bank(root, "train", label_set("synthetic"), names)


def test_region_bank_reads_label_images(synth_root: Path) -> None:
    bank = _bank(synth_root)
    assert len(bank) == 8 and bank.images.shape == (8, 48, 64, 3)  # 2 rooms x 4 views
    assert bank.classes.dtype == np.int16 and bank.classes.max() < len(bank.names)
    wall = bank.names.index("wall")
    assert any(wall in bank.regions(i, 1) for i in range(len(bank)))


def test_mask_embeddings_with_grad_is_maskclip() -> None:
    clip = build_clip(from_dict(ClipCfg, _TINY), allow_random_init=True)
    img = torch.rand(2, 3, 48, 64)
    masks = torch.randn(2, 3, 48, 64) * 5
    ref = clip.mask_embeddings(img, masks)
    for p in clip.parameters():
        p.requires_grad_(True)
    out = clip.mask_embeddings_with_grad(img, masks)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    assert clip.clip.visual.proj.grad is not None
    assert float(clip.clip.visual.proj.grad.abs().sum()) > 0


def test_pretraining_learns_regions_and_weights_round_trip(synth_root: Path,
                                                           tmp_path: Path) -> None:
    bank = _bank(synth_root)
    clip = build_clip(from_dict(ClipCfg, _TINY), allow_random_init=True)
    before = region_accuracy(clip, bank, min_pixels=10)
    cfg = from_dict(ClipPretrainCfg, {"steps": 80, "batch_views": 8, "lr": 3e-3,
                                      "warmup_steps": 5, "min_region_pixels": 10,
                                      "log_every": 20})
    history = pretrain_clip(clip, bank, cfg)
    after = region_accuracy(clip, bank, min_pixels=10)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    # memorising 8 views: nearly every region right (was chance before)
    assert np.nanmean(after) > 0.8 > np.nanmean(before)
    assert not any(p.requires_grad for p in clip.parameters())  # frozen again

    path = save_clip_weights(clip, tmp_path / "clip.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("text_projection").dtype == torch.float16
    again = build_clip(from_dict(ClipCfg, {**_TINY, "weights_path": str(path)}))
    names = list(bank.names)
    torch.testing.assert_close(again.text_embeddings(names), clip.text_embeddings(names),
                               atol=2e-2, rtol=2e-2)
    assert np.nanmean(region_accuracy(again, bank, min_pixels=10)) == pytest.approx(
        np.nanmean(after), abs=0.05)


def test_pruned_token_table_keeps_the_names_embeddings(tmp_path: Path) -> None:
    import os

    clip = build_clip(from_dict(ClipCfg, _TINY), allow_random_init=True)
    names = list(get_partition("synthetic_B15N4").classes)
    full = save_clip_weights(clip, tmp_path / "full.safetensors")
    pruned = save_clip_weights(clip, tmp_path / "pruned.safetensors", vocabulary=names)
    assert os.path.getsize(pruned) < 0.2 * os.path.getsize(full)
    a = build_clip(from_dict(ClipCfg, {**_TINY, "weights_path": str(full)}))
    b = build_clip(from_dict(ClipCfg, {**_TINY, "weights_path": str(pruned)}))
    assert torch.equal(a.text_embeddings(names), b.text_embeddings(names))
    assert torch.equal(a.null_embedding(), b.null_embedding())
    table = b.clip.token_embedding.weight
    used = torch.unique(b.tokenizer([""] + names))
    unused = torch.ones(table.shape[0], dtype=torch.bool)
    unused[used] = False
    assert float(table[unused].abs().max()) == 0.0 and float(table[used].abs().max()) > 0
    img = torch.rand(1, 3, 32, 32)
    assert torch.equal(a.image_embedding(img), b.image_embedding(img))  # vision untouched
