"""``xmask3d-synth`` command line (cli/synth.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xmask3d_ros.cli.synth import main
from xmask3d_ros.data.ground_truth import load_ground_truth
from xmask3d_ros.data.scannet_layout import read_scannet_2d_scene, read_scannet_3d, scene_3d_path

SMALL = ["--width", "24", "--height", "16", "--quiet", "--set", "ground_truth.point_spacing_m=0.2"]


def test_writes_both_formats_from_one_render(tmp_path: Path) -> None:
    assert main(["--scenes", "2", "--frames", "3", "--out", str(tmp_path), "--seed", "4",
                 "--storage", "sqlite3", *SMALL]) == 0
    for name in ("scene0000_00", "scene0001_00"):
        scene = read_scannet_2d_scene(tmp_path, name)
        assert len(scene.frames) == 3 and scene.frames[0].color_size == (24, 16)
        xyz, _, _ = read_scannet_3d(scene_3d_path(tmp_path, "train", name))
        gt = load_ground_truth(tmp_path / "bags" / f"{name}.gt.npz")
        np.testing.assert_array_equal(gt.points, xyz)
        np.testing.assert_allclose(gt.T_world_cam, [f.T_world_cam for f in scene.frames], atol=1e-8)
        assert (tmp_path / "bags" / name / f"{name}.db3").is_file()
    assert load_ground_truth(tmp_path / "bags" / "scene0001_00.gt.npz").seed == 5
    # The bags exist now: a second run refuses to overwrite them.
    assert main(["--frames", "1", "--out", str(tmp_path), "--format", "bag", *SMALL]) == 2


def test_scannet_only_and_bag_only(tmp_path: Path) -> None:
    assert main(["--frames", "2", "--out", str(tmp_path / "s"), "--format", "scannet", *SMALL]) == 0
    assert (tmp_path / "s" / "scannet_2d").is_dir() and not (tmp_path / "s" / "bags").exists()
    assert main(["--frames", "2", "--out", str(tmp_path / "b"), "--format", "bag", *SMALL]) == 0
    assert (tmp_path / "b" / "bags" / "scene0000_00" / "scene0000_00.mcap").is_file()
    assert not (tmp_path / "b" / "scannet_2d").exists()


def test_bad_arguments_fail_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--set", "camera.fps=-1", "--quiet"]) == 2
    assert "camera.fps" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--frames", "0", "--quiet"]) == 2
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--format", "ply"])
