"""The factory and persistence: missing weights fail before anything is built, the paper config
on the meta device has the published part sizes without reading weights, save -> load gives the
same outputs, strict loading names the keys, legacy files only through weights_only."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import xmask3d_ros.model.build as build_mod
from xmask3d_ros.config import load_config
from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.config.paths import resolve_model_config
from xmask3d_ros.model import clip as clip_mod
from xmask3d_ros.model import diffusion as diffusion_mod
from xmask3d_ros.model.build import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    build_model,
    from_pretrained,
    load_weights,
    save_pretrained,
)
from xmask3d_ros.model.compat import ensure_torchvision_importable
from xmask3d_ros.model.errors import CheckpointMismatchError, WeightsError
from xmask3d_ros.model.xmask3d import XMask3D

ensure_torchvision_importable()
pytest.importorskip("diffusers")
pytest.importorskip("open_clip")
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

NO_WEIGHTS = (
    "allow_random_init=true", "weights_path=", "clip.weights_path=",
    "diffusion.unet_path=", "diffusion.vae_path=",
)  # fmt: skip
# Published / independently counted sizes of the paper's parts.
PAPER_COUNTS = {
    "branch2d.extractor.unet": 859_520_964,  # SD v1 UNet 859.52 M
    "branch2d.extractor.vae": 83_653_863,  # SD v1 VAE 83.65 M
    "clip.clip": 427_616_513,  # open_clip ViT-L-14 427.6 M
    # MinkowskiEngine's examples/minkunet.py minus its final-conv bias (test_minkunet.py)
    "branch3d.net3d": 37_878_944 - 256,
    "branch3d.binary_net": 15_516_064 - 256,
    "branch3d.decoder": 256 * 768 + 768,
    "branch3d.point2text_adapter": 256 * 768 + 768,
    "branch3d.binary_head": 2 * 256 + 256 + 1,  # BatchNorm1d(256) + Linear(256 -> 1)
    "fusion": 1536 * 768 + 768,  # FeatureMerger: Linear 1536 -> 768
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: on a small shared CPU, extra OpenMP threads cost more than they give."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(*overrides: str) -> ModelConfig:
    return load_config(ModelConfig, resolve_model_config("tiny"), overrides)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def keyframe() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A random 64x48 image and 3000 points with pixels: enough for an output comparison."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    points = rng.uniform(0, 2, (3000, 3)).astype(np.float32)
    rows, cols = rng.integers(0, 48, 3000), rng.integers(0, 64, 3000)
    return image, points, image[rows, cols], rows, cols


def _outputs(model: XMask3D, keyframe: tuple) -> dict[str, torch.Tensor]:
    out = model.eval().infer(*keyframe)
    return {"fused": out.fused, "p_base": out.p_base, "pixels": out.mask_pixels,
            "clip": out.mask_clip}


def test_paper_config_on_meta_has_the_published_part_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_disk(*_a: object, **_k: object) -> None:
        raise AssertionError("weights were read although every weights path is empty")

    for target, name in ((build_mod, "load_weights"), (clip_mod, "load_clip_state_dict"),
                         (torch, "load"), (build_mod, "_read_state_dict")):
        monkeypatch.setattr(target, name, no_disk)
    cfg = load_config(ModelConfig, resolve_model_config("paper"), NO_WEIGHTS)
    with torch.device("meta"):
        model = build_model(cfg)
    assert all(p.is_meta for p in model.parameters())
    for name, want in PAPER_COUNTS.items():
        assert _count(model.get_submodule(name)) == want, name
    bb = model.branch3d.net3d
    assert bb.cfg.arch == "MinkUNet34C" and bb.cfg.voxel_size_m == 0.02
    assert model.branch3d.binary_net is not None
    assert model.branch3d.binary_net.cfg.arch == "MinkUNet18A"
    mg = model.branch2d.mask_decoder
    assert mg.query_feat.num_embeddings == 50 and mg.num_layers == 9
    frozen = sum(p.numel() for _, p in model.frozen_named_parameters())
    assert frozen == sum(PAPER_COUNTS[k] for k in ("branch2d.extractor.unet",
                                                   "branch2d.extractor.vae", "clip.clip"))
    trainable = sum(p.numel() for _, p in model.trainable_named_parameters())
    assert trainable + frozen == _count(model)
    print(f"paper XMask3D: {_count(model) / 1e6:.2f} M parameters, "
          f"{trainable / 1e6:.2f} M trainable")


@pytest.mark.parametrize(
    ("key", "name", "hint"),
    [
        ("weights_path", "ckpt.safetensors", "XMask3D checkpoint written by this project"),
        ("clip.weights_path", "clip.safetensors", "ViT-L-14"),
        ("diffusion.unet_path", "sd/unet", "Stable Diffusion v1.x"),
        ("diffusion.vae_path", "sd/vae", "Stable Diffusion v1.x"),
        ("captioner.uncond_path", "uncond.safetensors", "empty prompt"),
    ],
)
def test_missing_weights_fail_before_anything_is_built(
    key: str, name: str, hint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_build(*_a: object, **_k: object) -> None:
        raise AssertionError("a part was built before the weights were checked")

    for target in ("Branch3D", "build_mask_branch", "build_clip", "FeatureFusion"):
        monkeypatch.setattr(build_mod, target, no_build)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(WeightsError) as err:
        build_model(tiny(f"{key}=~/{name}"))
    msg = str(err.value)
    assert msg.startswith(f"{key}: ") and str(tmp_path / name) in msg and hint in msg


def test_error_types_share_one_home() -> None:
    assert diffusion_mod.WeightsError is WeightsError
    assert issubclass(clip_mod.ClipWeightsError, WeightsError)
    assert issubclass(CheckpointMismatchError, WeightsError)
    assert issubclass(WeightsError, FileNotFoundError)


def test_save_load_roundtrip_gives_identical_outputs(tmp_path: Path, keyframe: tuple) -> None:
    model = build_model(tiny(), seed=3)
    with torch.no_grad():  # as after training: nothing equals its initial value any more
        g = torch.Generator().manual_seed(1)
        for _, p in model.trainable_named_parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0, generator=g)
    want = _outputs(model, keyframe)
    folder = save_pretrained(model, tmp_path / "ckpt")
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    stored = load_file(str(folder / WEIGHTS_FILE))
    assert stored.keys() == model.trainable_state_dict().keys()
    assert not any(XMask3D.is_frozen(k) for k in stored)  # no SD / CLIP weights
    assert "branch2d.captioner.uncond_embedding" in stored  # the empty-prompt constant
    assert "branch3d.net3d.bn0.bn.running_var" in stored
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as f:
        assert f.metadata()["build_seed"] == "3"

    loaded = from_pretrained(folder)
    assert loaded.cfg == dataclasses.replace(model.cfg, weights_path=str(folder / WEIGHTS_FILE))
    got = _outputs(loaded, keyframe)
    for name in want:
        assert torch.equal(want[name], got[name]), name
    # the checkpoint is what made them equal: the same build without it differs
    fresh = _outputs(build_model(tiny(), seed=3), keyframe)
    assert not torch.equal(fresh["fused"], want["fused"])

    # a model config may point at the checkpoint directly (folder or file)
    via_cfg = build_model(tiny(f"weights_path={folder / WEIGHTS_FILE}"), seed=3)
    assert torch.equal(_outputs(via_cfg, keyframe)["fused"], want["fused"])


def test_half_precision_checkpoint_with_its_own_clip(tmp_path: Path, keyframe: tuple) -> None:
    """The demo's packaging: float16 tensors and a CLIP file named relative to the folder."""
    from xmask3d_ros.model.clip import build_clip

    model = build_model(tiny(), seed=3)
    folder = tmp_path / "ckpt"
    clip_file = folder / "clip.safetensors"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.clip.clip.state_dict().items()},
              str(clip_file))
    model.cfg = dataclasses.replace(
        model.cfg, clip=dataclasses.replace(model.cfg.clip, weights_path="clip.safetensors"))
    save_pretrained(model, folder, dtype=torch.float16)
    stored = load_file(str(folder / WEIGHTS_FILE))
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    loaded = from_pretrained(folder)  # cwd is elsewhere: the path resolves against the folder
    assert loaded.cfg.clip.weights_path == str(folder / "clip.safetensors")
    out_a, out_b = model.eval().infer(*keyframe), loaded.eval().infer(*keyframe)
    # float16 rounding may flip a near-tie mask assignment of this random model; elsewhere
    # the features agree to float16 precision
    same = out_a.point_mask == out_b.point_mask
    assert float(same.float().mean()) > 0.95
    torch.testing.assert_close(out_b.fused[same], out_a.fused[same], atol=5e-2, rtol=5e-2)
    torch.testing.assert_close(out_b.feat_3d, out_a.feat_3d, atol=5e-2, rtol=5e-2)
    same_clip = build_clip(loaded.cfg.clip)
    torch.testing.assert_close(same_clip.text_embeddings(["chair"]),
                               model.clip.text_embeddings(["chair"]))


def test_strict_loading_lists_keys_and_shapes(tmp_path: Path) -> None:
    model = build_model(tiny())
    state = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    dropped = "fusion.linear.bias"
    partial = {k: v for k, v in state.items() if k != dropped}
    partial["branch3d.extra.weight"] = torch.zeros(2)
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointMismatchError) as err:
        load_weights(model, tmp_path / "partial.safetensors")
    msg = str(err.value)
    assert "1 missing keys ['fusion.linear.bias']" in msg
    assert "1 unexpected keys ['branch3d.extra.weight']" in msg
    report = load_weights(model, tmp_path / "partial.safetensors", strict=False)
    assert report.missing == [dropped] and report.unexpected == ["branch3d.extra.weight"]

    wrong = dict(state, **{"fusion.linear.bias": torch.zeros(3)})
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=r"fusion\.linear\.bias \(3,\) vs"):
        load_weights(model, tmp_path / "wrong.safetensors", strict=False)

    # a sparse 1x1 kernel stored with ME's unit kernel axis loads into the 2-D layout
    key = "branch3d.net3d.final.kernel"
    assert state[key].ndim == 2
    unit = dict(state, **{key: state[key][None] + 1.0})
    save_file(unit, str(tmp_path / "unit.safetensors"))
    load_weights(model, tmp_path / "unit.safetensors")
    assert torch.equal(model.branch3d.net3d.final.kernel, state[key] + 1.0)


def test_legacy_files_only_through_weights_only(tmp_path: Path) -> None:
    model = build_model(tiny())
    state = model.trainable_state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "old.pth")
    assert load_weights(model, tmp_path / "old.pth") == ([], [])

    class Evil:
        def __reduce__(self) -> tuple:
            return (print, ("unpickled!",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(WeightsError, match=r"weights_path: cannot read .*evil\.pth"):
        load_weights(model, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(model, tmp_path / "nothing")
    with pytest.raises(WeightsError, match=r"from_pretrained: .*config\.yaml does not exist"):
        from_pretrained(tmp_path)
