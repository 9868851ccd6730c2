"""ScanNet on-disk layout: synthetic export -> reader round trip, real-file quirks, bad files."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from xmask3d_ros.config.synthetic import SyntheticCfg
from xmask3d_ros.data.classes import raw_to_scannet20
from xmask3d_ros.data.scannet_layout import (
    ScanNetFormatError,
    list_scannet_scenes,
    read_scannet_2d_scene,
    read_scannet_3d,
    scale_intrinsics,
    scene_2d_dir,
    scene_3d_path,
    write_scannet_3d,
)
from xmask3d_ros.data.synthetic import generate_room
from xmask3d_ros.data.synthetic.export import export_scannet_scene

N_FRAMES = 4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, small_cfg: SyntheticCfg) -> tuple[Path, Any]:
    """A two-scene synthetic dataset in the real layout (generated, never committed)."""
    root = tmp_path_factory.mktemp("scannet")
    room = generate_room(21, small_cfg)
    export_scannet_scene(root, "scene0000_00", room, N_FRAMES)
    other = generate_room(22, small_cfg)
    export_scannet_scene(root, "scene0001_00", other, 2, width=32, height=24, color_size=(96, 72))
    return root, room


def test_2d_round_trip_poses_intrinsics_depth_labels(dataset: tuple[Path, Any]) -> None:
    root, room = dataset
    scene = read_scannet_2d_scene(root, "scene0000_00")
    assert [f.index for f in scene.frames] == list(range(N_FRAMES))
    assert scene.skipped_invalid_pose == 0 and scene.skipped_missing == 0
    K = room.intrinsics()
    poses = room.camera_poses(N_FRAMES)
    for f, T in zip(scene.frames, poses):
        frame = room.render(T)
        np.testing.assert_allclose(f.T_world_cam, T, atol=1e-8)
        np.testing.assert_allclose(f.K_color, K, atol=1e-8)
        np.testing.assert_allclose(f.K_depth, K, atol=1e-8)
        assert f.color_size == f.depth_size == (64, 48) and f.depth_to_color_scale == (1.0, 1.0)
        depth = f.load_depth_m()
        assert depth.dtype == np.float32 and depth.shape == (48, 64)
        assert np.abs(depth - frame.depth_m).max() <= 0.0005 + 1e-6  # mm rounding
        np.testing.assert_array_equal(f.load_label(), frame.label)
        rgb = f.load_rgb()
        assert rgb.shape == (48, 64, 3) and np.abs(rgb.astype(int) - frame.rgb).mean() < 6  # JPEG


def test_3d_file_round_trip(dataset: tuple[Path, Any]) -> None:
    root, room = dataset
    assert list_scannet_scenes(root, "train") == ["scene0000_00", "scene0001_00"]
    assert list_scannet_scenes(root) == ["scene0000_00", "scene0001_00"]
    xyz, col, lab = read_scannet_3d(scene_3d_path(root, "train", "scene0000_00"))
    sp = room.sample_surface_points()
    np.testing.assert_array_equal(xyz, sp.points)
    np.testing.assert_allclose((col + 1) * 127.5, sp.colors, atol=1e-3)
    assert col.min() >= -1 and col.max() <= 1
    np.testing.assert_array_equal(lab, raw_to_scannet20(sp.label))
    assert xyz.dtype == col.dtype == np.float32 and lab.dtype == np.int64


def test_colour_and_depth_of_different_sizes(dataset: tuple[Path, Any]) -> None:
    root, _ = dataset
    f = read_scannet_2d_scene(root, "scene0001_00").frames[0]
    assert f.color_size == (96, 72) and f.depth_size == (32, 24)
    assert f.depth_to_color_scale == (3.0, 3.0)
    assert f.load_rgb().shape == (72, 96, 3) and f.load_depth_m().shape == (24, 32)
    np.testing.assert_allclose(scale_intrinsics(f.K_depth, 3.0, 3.0), f.K_color, atol=1e-9)
    # The same world point projects to corresponding pixels in both images.
    p_cam = np.array([0.3, -0.2, 2.0])
    uc = f.K_color @ p_cam / p_cam[2]
    ud = f.K_depth @ p_cam / p_cam[2]
    np.testing.assert_allclose((ud[:2] + 0.5) * 3.0 - 0.5, uc[:2], atol=1e-9)


def test_raw_export_intrinsic_files_take_precedence(dataset: tuple[Path, Any]) -> None:
    root, _ = dataset
    d = scene_2d_dir(root, "scene0001_00") / "intrinsic"
    d.mkdir(exist_ok=True)
    Kc = np.array([[1170.0, 0, 647.5, 0], [0, 1170.0, 483.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    Kd = np.array([[577.6, 0, 318.9, 0], [0, 577.6, 242.7, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.savetxt(d / "intrinsic_color.txt", Kc)
    np.savetxt(d / "intrinsic_depth.txt", Kd)
    try:
        f = read_scannet_2d_scene(root, "scene0001_00").frames[0]
        np.testing.assert_allclose(f.K_color, Kc[:3, :3])
        np.testing.assert_allclose(f.K_depth, Kd[:3, :3])
    finally:
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


def test_invalid_poses_and_missing_files_are_skipped_and_counted(tmp_path: Path,
                                                                 small_cfg: SyntheticCfg) -> None:
    room = generate_room(23, small_cfg)
    export_scannet_scene(tmp_path, "scene0002_00", room, 5, width=16, height=12)
    d = scene_2d_dir(tmp_path, "scene0002_00")
    (d / "pose" / "1.txt").write_text("-inf -inf -inf -inf\n" * 4)  # as in real ScanNet
    (d / "pose" / "3.txt").write_text("nan 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    (d / "depth" / "4.png").unlink()
    scene = read_scannet_2d_scene(tmp_path, "scene0002_00")
    assert [f.index for f in scene.frames] == [0, 2]
    assert scene.skipped_invalid_pose == 2 and scene.skipped_missing == 1
    (d / "pose" / "2.txt").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(ScanNetFormatError, match=r"2\.txt.*4x4"):
        read_scannet_2d_scene(tmp_path, "scene0002_00")


def test_missing_scene_and_intrinsics_errors_name_the_paths(tmp_path: Path) -> None:
    with pytest.raises(ScanNetFormatError, match="no color/ folder"):
        read_scannet_2d_scene(tmp_path, "scene9999_00")
    (scene_2d_dir(tmp_path, "scene9999_00") / "color").mkdir(parents=True)
    with pytest.raises(ScanNetFormatError, match="intrinsics.txt"):
        read_scannet_2d_scene(tmp_path, "scene9999_00")
    with pytest.raises(ScanNetFormatError, match="does not exist"):
        read_scannet_3d(tmp_path / "nope.pth")


def _arrays(n: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.random((n, 3)).astype(np.float32), rng.uniform(-1, 1, (n, 3)),
            rng.integers(0, 20, n).astype(np.int64))


def test_real_file_variants_with_numpy_arrays_load_safely(tmp_path: Path) -> None:
    xyz, col, lab = _arrays()
    modern = tmp_path / "modern.pth"
    torch.save((xyz, col, lab), modern)  # what OpenScene's preprocessing writes
    legacy = tmp_path / "legacy.pth"
    torch.save((xyz, col, lab.astype(np.float64)), legacy, _use_new_zipfile_serialization=False)
    # Files pickled under numpy 1.x name the array rebuild function numpy.core.multiarray.
    raw = legacy.read_bytes()
    assert b"numpy._core.multiarray" in raw
    legacy.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    for path in (modern, legacy):
        x, c, lab2 = read_scannet_3d(path)
        np.testing.assert_array_equal(x, xyz)
        np.testing.assert_allclose(c, col.astype(np.float32))
        np.testing.assert_array_equal(lab2, lab)


def test_tensor_file_written_by_us_is_a_plain_tuple(tmp_path: Path) -> None:
    xyz, col, lab = _arrays()
    path = write_scannet_3d(tmp_path / "a" / "s_vh_clean_2.pth", xyz, col, lab)
    data = torch.load(path, weights_only=True)
    assert isinstance(data, tuple) and all(isinstance(t, torch.Tensor) for t in data)
    with pytest.raises(ValueError, match="expected coords"):
        write_scannet_3d(tmp_path / "b.pth", xyz, col[:3], lab)


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (Path("/tmp/xmask3d_pwned"),))


@pytest.mark.parametrize("case", ["two", "four", "dict", "mismatch", "garbage", "evil", "evil_zip"])
def test_bad_3d_files_give_a_clear_error_naming_the_file(tmp_path: Path, case: str) -> None:
    xyz, col, lab = _arrays()
    path = tmp_path / f"{case}.pth"
    if case == "two":
        torch.save((torch.from_numpy(xyz), torch.from_numpy(col)), path)
    elif case == "four":
        torch.save((xyz, col, lab, lab), path)
    elif case == "dict":
        torch.save({"coords": torch.from_numpy(xyz)}, path)
    elif case == "mismatch":
        torch.save((xyz, col, lab[:-1]), path)
    elif case == "garbage":
        path.write_bytes(b"this is not a torch file")
    elif case == "evil":
        path.write_bytes(pickle.dumps((_Evil(), col, lab), protocol=2))
    else:
        buf = io.BytesIO()
        torch.save((xyz, col, lab), buf)
        with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
            names = z.namelist()
            pkl = [n for n in names if n.endswith("data.pkl")][0]
            with zipfile.ZipFile(path, "w") as out:
                for n in names:
                    out.writestr(n, pickle.dumps((_Evil(),), protocol=2) if n == pkl else z.read(n))
    with pytest.raises(ScanNetFormatError) as err:
        read_scannet_3d(path)
    assert str(path) in str(err.value)
    assert not Path("/tmp/xmask3d_pwned").exists()
