"""S3DIS rooms in PLA's .npy layout: reading, splits, labels, bad files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from xmask3d_ros.data.labels import S3DIS_CLASSES
from xmask3d_ros.data.partitions import get_partition
from xmask3d_ros.data.s3dis import (
    S3DIS_DIR,
    S3DISFormatError,
    list_s3dis_rooms,
    read_s3dis_room,
)


def _room(root: Path, name: str, n: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = np.concatenate([rng.random((n, 3)) * 4, rng.integers(0, 256, (n, 3)),
                          rng.integers(0, 13, (n, 1)), rng.integers(0, 9, (n, 1))], axis=1)
    (root / S3DIS_DIR).mkdir(parents=True, exist_ok=True)
    np.save(root / S3DIS_DIR / f"{name}.npy", arr)
    return arr


def test_read_and_split(tmp_path: Path) -> None:
    arr = _room(tmp_path, "Area_5_office_1")
    _room(tmp_path, "Area_1_hallway_2")
    assert [p.stem for p in list_s3dis_rooms(tmp_path)] == ["Area_5_office_1"]
    assert [p.stem for p in list_s3dis_rooms(tmp_path, split="train")] == ["Area_1_hallway_2"]
    room = read_s3dis_room(tmp_path / S3DIS_DIR / "Area_5_office_1.npy")
    assert room.area == 5 and room.points.dtype == np.float32
    np.testing.assert_array_equal(room.labels, arr[:, 6].astype(np.int64))
    np.testing.assert_array_equal(room.colors, arr[:, 3:6].astype(np.uint8))
    p = get_partition("s3dis_B6N6")
    assert S3DIS_CLASSES[12] == "clutter"
    assert (p.binary_labels(room.labels)[room.labels == 12] == -1).all()


def test_bad_files_name_the_path(tmp_path: Path) -> None:
    (tmp_path / S3DIS_DIR).mkdir()
    bad = tmp_path / S3DIS_DIR / "Area_2_x.npy"
    np.save(bad, np.zeros((4, 5)))
    with pytest.raises(S3DISFormatError, match="Area_2_x.npy.*N, 8"):
        read_s3dis_room(bad)
    obj = tmp_path / S3DIS_DIR / "Area_3_y.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(S3DISFormatError, match="Area_3_y.npy"):
        read_s3dis_room(obj)  # object arrays would need unpickling: refused
    evil = tmp_path / S3DIS_DIR / "Area_4_z.npy"
    evil.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(S3DISFormatError, match="Area_4_z.npy"):
        read_s3dis_room(evil)
