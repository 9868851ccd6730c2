"""Implicit 3D captioner: zero gates give exactly the empty-prompt condition (ref-notes §1.4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xmask3d_ros.config.model import CaptionerCfg
from xmask3d_ros.model.captioner import (
    ImplicitCaptioner,
    PositionalLinear,
    empty_prompt_embedding,
    load_empty_prompt_embedding,
    save_empty_prompt_embedding,
)
from xmask3d_ros.model.compat import ensure_torchvision_importable
from xmask3d_ros.model.diffusion import WeightsError

CFG = CaptionerCfg(context_tokens=7, cross_attention_dim=12, time_embed_dim=20)


def test_initial_output_is_the_empty_prompt_condition() -> None:
    torch.manual_seed(0)
    uncond = torch.randn(1, 7, 12)
    cap = ImplicitCaptioner(CFG, prefix_dim=5, uncond=uncond)
    prefix = torch.randn(3, 5) * 10
    context, time_cond = cap(prefix)
    assert context.shape == (3, 7, 12) and time_cond.shape == (3, 20)
    assert torch.equal(context, uncond.expand(3, -1, -1))
    assert torch.count_nonzero(time_cond) == 0


def test_output_follows_the_gated_formula_once_gates_open() -> None:
    torch.manual_seed(1)
    cap = ImplicitCaptioner(CFG, prefix_dim=5)
    with torch.no_grad():
        cap.alpha_cond.fill_(0.5)
        cap.alpha_cond_time_embed.fill_(-0.25)
    prefix = torch.randn(2, 5)
    context, time_cond = cap(prefix)
    proj = prefix @ cap.clip_project.linear.weight.T + cap.clip_project.linear.bias
    expected = cap.uncond_embedding + torch.tanh(torch.tensor(0.5)) * (
        proj[:, None, :] + cap.clip_project.positional_embedding
    )
    torch.testing.assert_close(context, expected)
    tproj = prefix @ cap.time_embed_project.linear.weight.T + cap.time_embed_project.linear.bias
    tproj = tproj + cap.time_embed_project.positional_embedding[:, 0]
    torch.testing.assert_close(time_cond, torch.tanh(torch.tensor(-0.25)) * tproj)
    assert not torch.allclose(context, cap.uncond_embedding.expand(2, -1, -1))
    # different 3D features now give different conditions
    other, _ = cap(prefix.flip(0))
    assert not torch.allclose(context, other)


def test_random_init_constant_is_seeded_and_stored() -> None:
    a = ImplicitCaptioner(CFG, prefix_dim=5).uncond_embedding
    b = ImplicitCaptioner(CFG, prefix_dim=5).uncond_embedding
    assert torch.equal(a, b) and a.shape == (1, 7, 12)
    assert "uncond_embedding" in ImplicitCaptioner(CFG, prefix_dim=5).state_dict()


def test_positional_linear_shapes() -> None:
    torch.manual_seed(0)
    pl = PositionalLinear(4, 64, seq_len=77)
    assert pl(torch.zeros(2, 4)).shape == (2, 77, 64)
    assert 0.018 < float(pl.positional_embedding.detach().std()) < 0.022  # trunc-normal, std 0.02


def test_uncond_file_roundtrip_and_errors(tmp_path: Path) -> None:
    emb = torch.randn(1, 7, 12)
    save_empty_prompt_embedding(tmp_path / "uncond.safetensors", emb)
    loaded = load_empty_prompt_embedding(tmp_path / "uncond.safetensors")
    assert torch.equal(loaded, emb)
    cap = ImplicitCaptioner(CFG, prefix_dim=5, uncond=loaded)
    assert torch.equal(cap(torch.zeros(1, 5))[0], emb)
    with pytest.raises(
        WeightsError, match=r"captioner.uncond_path: .*missing.safetensors does not exist"
    ):
        load_empty_prompt_embedding(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match=r"captioner.uncond_path: embedding of shape \(1, 7, 11\)"):
        ImplicitCaptioner(CFG, prefix_dim=5, uncond=torch.zeros(1, 7, 11))


def test_empty_prompt_embedding_from_a_local_sd_folder(tmp_path: Path) -> None:
    """A tiny text encoder + tokenizer in diffusers' layout: "" -> [BOS, EOS, EOS...] (77)."""
    ensure_torchvision_importable()
    transformers = pytest.importorskip("transformers")
    tok_dir, enc_dir = tmp_path / "tokenizer", tmp_path / "text_encoder"
    tok_dir.mkdir()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2}
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"))
    tokenizer.save_pretrained(str(tok_dir))
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(
        vocab_size=3,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    encoder = transformers.CLIPTextModel(config).eval()
    encoder.save_pretrained(str(enc_dir))
    emb = empty_prompt_embedding(tmp_path)
    ids = torch.tensor([[0] + [1] * 76])  # SD v1 pads with the end token to 77
    with torch.no_grad():
        expected = encoder(input_ids=ids).last_hidden_state
    assert emb.shape == (1, 77, 16)
    torch.testing.assert_close(emb, expected)
    with pytest.raises(WeightsError, match="tokenizer"):
        empty_prompt_embedding(tmp_path / "nowhere")
