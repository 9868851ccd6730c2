"""Replay with the XMask3D segmenter (a stand-in tiny checkpoint), TF in the output bag, overlays,
and the demo's pipeline part (synth bag -> replay --segmenter xmask3d -> metrics and pictures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosDurability
from rosbags.typesys import Stores, get_typestore

from xmask3d_ros.data.partitions import get_partition
from xmask3d_ros.pipeline.palette import label_colors

TS = get_typestore(Stores.ROS2_JAZZY)
N_FRAMES = 12
W, H = 64, 48
PARTITION = get_partition("synthetic_B15N4")
DEMO_LABELS = list(PARTITION.base) + list(PARTITION.novel)


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic room bag (seed outside the demo training seeds) written by xmask3d-synth."""
    from xmask3d_ros.cli.synth import main as synth

    root = tmp_path_factory.mktemp("synth")
    assert synth(["--scenes", "1", "--seed", "7000", "--frames", str(N_FRAMES), "--width", str(W),
                  "--height", str(H), "--format", "bag", "--out", str(root), "--quiet",
                  "--set", "ground_truth.point_spacing_m=0.1"]) == 0
    return root / "bags" / "scene0000_00"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-in for models/demo: the tiny model (random init, seed 0) + a vocabulary.yaml."""
    import torch

    from xmask3d_ros.config.model import ModelConfig
    from xmask3d_ros.config.paths import resolve_model_config
    from xmask3d_ros.config.schema import load_config
    from xmask3d_ros.model.build import build_model, save_pretrained

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("ckpt")
    save_pretrained(build_model(load_config(ModelConfig, resolve_model_config("tiny")), seed=0), folder)
    (folder / "vocabulary.yaml").write_text(
        yaml.safe_dump({"base": list(PARTITION.base), "novel": list(PARTITION.novel)}), encoding="utf-8")
    return folder


def _read_bag(path: Path) -> list[tuple[str, str, int, bytes]]:
    with AnyReader([path], default_typestore=TS) as reader:
        return [(c.topic, c.msgtype, int(t), bytes(raw)) for c, t, raw in reader.messages()]


def _qos(path: Path, topic: str) -> list[Any]:
    with AnyReader([path], default_typestore=TS) as reader:
        (conn,) = [c for c in reader.connections if c.topic == topic]
        return list(conn.ext.offered_qos_profiles)


def test_xmask3d_replay_writes_metrics_pictures_and_tf(bag: Path, checkpoint: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's pipeline part, in-process: replay --segmenter xmask3d on the stand-in checkpoint."""
    from xmask3d_ros.cli.replay import main

    out = tmp_path / "run"
    rc = main([str(bag), "--segmenter", "xmask3d", "--checkpoint", str(checkpoint), "--threads", "1",
               "--labels", ",".join(DEMO_LABELS), "--overlays", "3", "--out", str(out), "--quiet",
               "--set", "visibility.border_px=1"])
    text = capsys.readouterr().out
    assert rc == 0
    assert f"checkpoint {checkpoint}" in text and "vocabulary.yaml" in text
    assert f"{len(PARTITION.base)} base, {len(PARTITION.novel)} novel" in text
    metrics = json.loads((out / "metrics.json").read_text())
    # novel labels come from vocabulary.yaml: the metrics split base / novel and give hIoU
    assert "hiou" in {k.lower() for k in metrics} and 0 < metrics["gt_coverage"] <= 1
    assert (out / "metrics.md").read_text().count("novel") >= 1
    report = json.loads((out / "report.json").read_text())
    assert report["segmenter"] == "xmask3d" and report["frames_used"] == N_FRAMES
    assert report["keyframes"] >= 1 and report["frames_per_s"] > 0
    for name in ("topdown.png", "topdown_gt.png", "map.ply"):
        assert (out / name).stat().st_size > 0
    overlays = sorted((out / "overlays").glob("overlay_*.png"))
    assert 1 <= len(overlays) <= 3
    from PIL import Image

    for p in overlays:
        with Image.open(p) as im:
            assert im.size == (W, H) and im.mode == "RGB"
    # the output bag carries the input's TF with its original stamps, types and bytes
    inp = [m for m in _read_bag(bag) if m[0] in ("/tf", "/tf_static")]
    got = [m for m in _read_bag(out / "semantic_map.mcap") if m[0] in ("/tf", "/tf_static")]
    assert sorted(got) == sorted(inp)
    assert sum(m[0] == "/tf" for m in got) == N_FRAMES and sum(m[0] == "/tf_static" for m in got) == 1
    assert {m[1] for m in got} == {"tf2_msgs/msg/TFMessage"}
    assert _qos(out / "semantic_map.mcap", "/tf_static")[0].durability == QosDurability.TRANSIENT_LOCAL
    assert not list(out.rglob(".*partial"))


def test_tf_copied_only_in_the_replayed_range(bag: Path, tmp_path: Path) -> None:
    """--start/--duration: /tf of the cut only; /tf_static (latched) always."""
    from xmask3d_ros.cli.replay import main
    from xmask3d_ros.data.ground_truth import load_ground_truth

    stamps = load_ground_truth(str(bag) + ".gt.npz").stamps_ns
    period = (int(stamps[1]) - int(stamps[0])) / 1e9
    out = tmp_path / "cut"
    assert main([str(bag), "--segmenter", "ground_truth", "--out", str(out), "--quiet", "--overlays", "0",
                 "--start", str(2.5 * period), "--duration", str(5 * period)]) == 0
    got = [m for m in _read_bag(out / "semantic_map.mcap") if m[0] in ("/tf", "/tf_static")]
    tf_stamps = [t for topic, _, t, _ in got if topic == "/tf"]
    assert len(tf_stamps) == 5 and set(tf_stamps) <= {int(s) for s in stamps}
    assert min(tf_stamps) == int(stamps[3]) and sum(m[0] == "/tf_static" for m in got) == 1
    assert not (out / "overlays").exists()


def test_overlay_blends_the_palette_colour() -> None:
    from xmask3d_ros.replay.outputs import overlay_image

    rgb = np.full((6, 8, 3), 200, np.uint8)
    rgb[..., 2] = 10
    lab = np.full((6, 8), -1, np.int64)
    lab[2, 3], lab[4, 5], lab[0, 0] = 3, 0, 65535
    out = overlay_image(rgb, lab, alpha=0.5)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    want = np.rint(0.5 * rgb[2, 3].astype(float) + 0.5 * label_colors(np.array([3]))[0]).astype(np.uint8)
    np.testing.assert_array_equal(out[2, 3], want)
    np.testing.assert_array_equal(out[0, 0], np.rint(0.5 * rgb[0, 0] + 0.5 * np.array([128.0] * 3)))
    untouched = lab < 0
    np.testing.assert_array_equal(out[untouched], rgb[untouched])
    with pytest.raises(ValueError):
        overlay_image(rgb, lab[:3])


def test_label_pixels_and_written_overlay(tmp_path: Path) -> None:
    """A flat wall 2 m ahead, half its voxels labelled 1 and half 4: the overlay's pixels outside the
    legend carry the blended colour of the voxel their depth falls on."""
    from PIL import Image

    from xmask3d_ros.geometry.camera import PinholeCamera
    from xmask3d_ros.geometry.frame import PosedFrame, RgbdFrame
    from xmask3d_ros.geometry.transforms import SE3
    from xmask3d_ros.pipeline import UNKNOWN_LABEL
    from xmask3d_ros.replay.outputs import label_pixels, write_overlays

    w, h, v = 160, 120, 0.05
    cam = PinholeCamera(100.0, 100.0, (w - 1) / 2, (h - 1) / 2, w, h)
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[...] = (40, 80, 120)
    depth = np.full((h, w), 2.0, np.float32)
    depth[:, :10] = 0.0  # no depth: left as the image
    posed = PosedFrame(RgbdFrame(rgb, depth, cam, 5, "cam_optical"), SE3.from_matrix(np.eye(4)))
    xs, ys = np.meshgrid(np.arange(-3.2, 3.2, v) + v / 2, np.arange(-2.4, 2.4, v) + v / 2)
    pos = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, 2.0)], 1).astype(np.float32)
    lab = np.where(pos[:, 0] < 0, 1, 4).astype(np.uint16)
    lab[(pos[:, 1] > 1.0)] = UNKNOWN_LABEL
    pix = label_pixels(posed, pos, lab, v)
    assert (pix[:, :10] == -1).all()
    assert pix[60, 20] == 1 and pix[60, 150] == 4 and pix[115, 150] == UNKNOWN_LABEL

    class Answer:
        positions, voxel_label = pos, lab

    (path,) = write_overlays(tmp_path / "ov", [posed], Answer(), ["a", "b", "c", "d", "e"], v)
    assert path.name == "overlay_00_5.png"
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (h, w, 3)
    blend = np.rint(0.5 * rgb[0, 0] + 0.5 * label_colors(np.array([4]))[0]).astype(np.uint8)
    np.testing.assert_array_equal(img[60, 150], blend)  # right half, away from the top-left legend
    np.testing.assert_array_equal(img[60, 5], rgb[60, 5])  # no depth: the image as it was
    assert (img[5:15, 5:15] != rgb[5:15, 5:15]).any()  # the legend is drawn


def test_evenly_spaced_sampler_is_bounded_and_even() -> None:
    from xmask3d_ros.replay.run import EvenSampler, evenly_spaced

    s = EvenSampler(8)
    for i in range(100):
        s.add(i)
    assert len(s.items) <= 8 and s.items[0] == 0
    steps = np.diff(s.items)
    assert (steps == steps[0]).all()
    assert evenly_spaced(list(range(10)), 4) == [0, 3, 6, 9]
    assert evenly_spaced([1, 2], 4) == [1, 2] and evenly_spaced([], 3) == [] and evenly_spaced([1], 0) == []
    with pytest.raises(ValueError):
        EvenSampler(0)


def test_missing_checkpoint_is_one_clear_line(bag: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import xmask3d_ros.config.paths as paths
    from xmask3d_ros.cli.replay import main
    from xmask3d_ros.config.schema import ConfigError

    missing = tmp_path / "no_such_checkpoint"
    assert main([str(bag), "--segmenter", "xmask3d", "--checkpoint", str(missing), "--out",
                 str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err and "Traceback" not in err

    def absent() -> Path:
        raise ConfigError("<install>: cannot find the shipped models/demo/model.safetensors (searched /x)")

    monkeypatch.setattr(paths, "demo_checkpoint_dir", absent)
    assert main([str(bag), "--segmenter", "xmask3d", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "models/demo" in err and "--checkpoint" in err
    assert not (tmp_path / "o").exists()


def test_bad_vocabulary_yaml_is_named(checkpoint: Path, tmp_path: Path) -> None:
    from xmask3d_ros.cli.replay import checkpoint_vocabulary
    from xmask3d_ros.config.schema import ConfigError

    assert checkpoint_vocabulary(checkpoint) == (list(PARTITION.base), list(PARTITION.novel))
    assert checkpoint_vocabulary(tmp_path) is None
    (tmp_path / "vocabulary.yaml").write_text("base: chair\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="vocabulary.yaml.*base"):
        checkpoint_vocabulary(tmp_path)


def test_map_metrics_seen_points_by_hand() -> None:
    """Two voxels (chair, table); GT: two chair points and one table point beside them, one
    table point far away, nearest to the chair voxel. All points: chair IoU 2/3, table 1/2;
    seen only (the far point left out): 1 and 1."""
    from xmask3d_ros.pipeline.answers import QueryAnswer, QueryMode
    from xmask3d_ros.replay.outputs import map_metrics

    answer = QueryAnswer(
        stamp_ns=0, frame_id="map", mode=QueryMode.SEGMENT, min_score=0.0, results=(), map_voxels=2,
        latency_ms=0.0, dropped_labels=(), positions=np.array([[0, 0, 0], [1, 0, 0]], np.float32),
        voxel_label=np.array([0, 1], np.uint16), voxel_score=np.ones(2, np.float32), scores=None,
        voxel_object=np.full(2, -1, np.int32), timings_ms={})
    pts = np.array([[0.01, 0, 0], [-0.01, 0, 0], [1.02, 0, 0], [-3.0, 0, 0]])
    names = ["chair", "chair", "table", "table"]
    every = map_metrics(answer, ["chair", "table"], pts, names, novel=["table"])
    seen = map_metrics(answer, ["chair", "table"], pts, names, novel=["table"], seen_within_m=0.1)
    assert every.iou[0] == pytest.approx(2 / 3) and every.iou[1] == pytest.approx(1 / 2)
    assert seen.iou[0] == pytest.approx(1.0) and seen.iou[1] == pytest.approx(1.0)
    assert seen.hiou == pytest.approx(1.0) and every.hiou < 0.6
