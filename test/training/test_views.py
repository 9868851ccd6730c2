"""The view dataset on a generated fixture in the real ScanNet layout (raw SensReader export:
1296x968 colour, 640x480 depth, intrinsic/ files, an -inf pose), ScanNet200 labels, safety."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from xmask3d_ros.config.schema import from_dict
from xmask3d_ros.config.training import DataCfg
from xmask3d_ros.data.labels import SCANNET200_RAW_IDS
from xmask3d_ros.data.partitions import get_partition
from xmask3d_ros.data.scannet_layout import (
    ScanNetFormatError,
    scene_2d_dir,
    scene_3d_path,
    write_scannet_2d_frame,
    write_scannet_3d,
)
from xmask3d_ros.training.batch import collate_views
from xmask3d_ros.training.views import ViewDataset

K_COLOR = np.array([[1170.187988, 0, 647.75], [0, 1170.187988, 483.75], [0, 0, 1]])
K_DEPTH = np.array([[577.870605, 0, 319.5], [0, 577.870605, 239.5], [0, 0, 1]])
WALL_Z = 2.0


def _pose(tx: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = (tx, 0.0, 0.0)
    return T


def _write_scene(root: Path, scene: str = "scene0000_00") -> None:
    """A wall at z = 2 m (world = camera frame up to an x shift): left half wall (NYU40 1 ->
    index 0), right half door (NYU40 8 -> index 7)."""
    xs, ys = np.meshgrid(np.arange(-1.5, 1.5, 0.02), np.arange(-1.0, 1.0, 0.02))
    pts = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, WALL_Z)], axis=1)
    lab = np.where(pts[:, 0] < 0.0, 0, 7)
    col = np.where(lab[:, None] == 0, [200, 50, 50], [50, 50, 200]).astype(np.uint8)
    write_scannet_3d(scene_3d_path(root, "val", scene), pts, col, lab)
    d = scene_2d_dir(root, scene)
    for i, (tx, bad) in enumerate(((0.0, False), (0.1, True), (-0.1, False))):
        T = _pose(tx)
        if bad:
            T[:] = -np.inf  # ScanNet marks lost tracking this way
        # colour/label at 1296x968 from the colour camera, depth at 640x480
        u = np.arange(1296)
        x_world = (u - K_COLOR[0, 2]) / K_COLOR[0, 0] * WALL_Z + tx
        rgb = np.zeros((968, 1296, 3), np.uint8)
        rgb[:, :] = np.where((x_world < 0)[:, None], [200, 50, 50], [50, 50, 200])
        label = np.broadcast_to(np.where(x_world < 0, 1, 8), (968, 1296)).astype(np.uint16)
        write_scannet_2d_frame(d, i, rgb=rgb, depth_m=np.full((480, 640), WALL_Z),
                               T_world_cam=T if not bad else np.eye(4), label=label)
        if bad:
            np.savetxt(d / "pose" / f"{i}.txt", T)
    (d / "intrinsic").mkdir(parents=True, exist_ok=True)
    for name, K in (("color", K_COLOR), ("depth", K_DEPTH)):
        M = np.eye(4)
        M[:3, :3] = K
        np.savetxt(d / "intrinsic" / f"intrinsic_{name}.txt", M)


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("raw_scannet")
    _write_scene(root)
    return root


def _cfg(root: Path, **kw: object) -> DataCfg:
    return from_dict(DataCfg, {"root": str(root), "val_split": "val", **kw})


def test_real_layout_views(raw_root: Path) -> None:
    ds = ViewDataset(_cfg(raw_root), "val", seed=1)
    scene = ds.scene("scene0000_00")
    assert scene.frames.skipped_invalid_pose == 1
    assert [f.index for f in scene.frames.frames] == [0, 2]
    seen = set()
    for epoch in range(6):
        v = ds.sample(0, epoch)
        seen.add(v.frame)
        assert v.image.shape == (480, 640, 3)  # colour resized to the depth grid
        assert 400 < len(v.points) < 65000
        # the pixel of each visible point sees its own class in the (resized) label image
        assert v.labels_2d is not None
        agree = v.labels_2d[v.rows, v.cols] == v.labels
        assert agree.mean() > 0.97
        # and the colour image at that pixel is the point's colour (wall red, door blue)
        red = v.image[v.rows, v.cols, 0] > 128
        assert ((red == (v.labels == 0)).mean()) > 0.97
    assert seen <= {0, 2} and len(seen) == 2
    same = ds.sample(0, 3)
    assert np.array_equal(same.point_index, ds.sample(0, 3).point_index)  # (seed, epoch, i)


def test_selection_thresholds_and_collate(raw_root: Path) -> None:
    ds = ViewDataset(_cfg(raw_root, max_visible=401, min_visible=400), "val")
    with pytest.raises(ScanNetFormatError, match="no frame passed"):
        ds.sample(0, 0)
    ds = ViewDataset(_cfg(raw_root), "val")
    views = [ds.sample(0, 0), ds.sample(0, 1)]
    batch = collate_views(views, get_partition("scannet_B15N4"))
    assert batch.images.shape == (2, 3, 480, 640)
    assert set(batch.labels_3d.unique().tolist()) <= {0, 6}  # wall 0, door -> base index 6
    assert batch.binary_labels.eq(1).all()
    assert len(batch.set_targets) == 2


def test_scannet200_labels(raw_root: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(raw_root, tmp_path / "r")
    n = len(ViewDataset(_cfg(raw_root), "val").scene("scene0000_00").points)
    txt = tmp_path / "r" / "scannet_3d_200" / "val" / "scene0000_00.txt"
    cfg = _cfg(tmp_path / "r", label_set="scannet200", partition="scannet200_B170N30")
    with pytest.raises(ScanNetFormatError, match="ScanNet200 label file missing"):
        ViewDataset(cfg, "val").scene("scene0000_00")
    txt.parent.mkdir(parents=True)
    raw = np.full(n, SCANNET200_RAW_IDS[3])
    raw[::2] = 12  # not a ScanNet200 id -> ignore
    np.savetxt(txt, raw, fmt="%d")
    lab = ViewDataset(cfg, "val").scene("scene0000_00").labels
    assert set(lab[1::2].tolist()) == {3} and set(lab[::2].tolist()) == {200}


class _Evil:
    def __reduce__(self):  # would run on unpickling
        return (Path("/tmp/xmask3d_views_pwned").touch, ())


def test_pth_is_never_unpickled(tmp_path: Path) -> None:
    _write_scene(tmp_path)
    path = scene_3d_path(tmp_path, "val", "scene0000_00")
    path.write_bytes(pickle.dumps((_Evil(), 1, 2), protocol=2))
    with pytest.raises(ScanNetFormatError) as err:
        ViewDataset(_cfg(tmp_path), "val").scene("scene0000_00")
    assert str(path) in str(err.value)
    assert not Path("/tmp/xmask3d_views_pwned").exists()
    assert torch.is_grad_enabled()


def test_augmentation_moves_only_the_3d_input(synth_root: Path) -> None:
    from .conftest import data_overrides

    plain = ViewDataset(from_dict(DataCfg, data_overrides(synth_root)), "train", seed=4)
    jitter = ViewDataset(from_dict(DataCfg, {**data_overrides(synth_root), "augment": True}),
                         "train", seed=4)
    a, b = plain.sample(1, 3), jitter.sample(1, 3)
    np.testing.assert_array_equal(a.point_index, b.point_index)  # same draw
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.rows, b.rows)
    assert not np.allclose(a.points, b.points)
    # a similarity transform: every pairwise distance scales by one factor in [0.9, 1.1]
    i, j = np.random.default_rng(0).integers(0, len(a.points), size=(2, 200))
    da = np.linalg.norm(a.points[i] - a.points[j], axis=1)
    db = np.linalg.norm(b.points[i] - b.points[j], axis=1)
    ok = da > 0.1
    ratio = db[ok] / da[ok]
    assert 0.9 <= ratio.mean() <= 1.1 and np.ptp(ratio) < 1e-4
    # the turn is about z (up to pi/64 tilt): heights barely change relative to each other
    dz_a = a.points[i, 2] - a.points[j, 2]
    dz_b = b.points[i, 2] - b.points[j, 2]
    assert np.abs(dz_b / ratio.mean() - dz_a).max() < 0.1 * da.max()
