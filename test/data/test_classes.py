"""Class lists and label maps (data/classes.py)."""

from __future__ import annotations

import numpy as np
import pytest

from xmask3d_ros.data import classes as C


def test_scannet20_matches_reference_notes() -> None:
    assert len(C.SCANNET20_CLASSES) == len(C.SCANNET20_NYU40_IDS) == 20
    assert C.SCANNET20_CLASSES[0] == "wall" and C.SCANNET20_CLASSES[-1] == "otherfurniture"
    assert C.SCANNET20_NYU40_IDS == (
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39
    )


def test_raw_to_scannet20_maps_every_nyu40_id_and_ignores_the_rest() -> None:
    raw = np.arange(-5, 300)
    out = C.raw_to_scannet20(raw)
    for k, nyu in enumerate(C.SCANNET20_NYU40_IDS):
        assert out[raw == nyu][0] == k
    others = ~np.isin(raw, C.SCANNET20_NYU40_IDS)
    assert np.all(out[others] == C.IGNORE_INDEX)
    assert out.dtype == np.uint8
    assert C.raw_to_scannet20(np.array([[-100, 1]], dtype=np.int32)).tolist() == [[255, 0]]


def test_synthetic_vocabulary_extends_scannet20_with_unique_ids() -> None:
    assert C.SYNTHETIC_CLASSES[:20] == C.SCANNET20_CLASSES
    assert len(set(C.SYNTHETIC_RAW_IDS)) == len(C.SYNTHETIC_RAW_IDS) == len(C.SYNTHETIC_CLASSES)
    extra = dict(zip(C.SYNTHETIC_CLASSES[20:], C.SYNTHETIC_RAW_IDS[20:]))
    # Synthetic-only classes never reuse a ScanNet-20 id; non-NYU40 concepts sit above 40.
    assert not set(extra.values()) & set(C.SCANNET20_NYU40_IDS)
    assert extra["ceiling"] == 22 and extra["plant"] >= C.SYNTHETIC_ONLY_FIRST_ID
    idx = C.raw_to_synthetic(np.asarray(C.SYNTHETIC_RAW_IDS))
    assert idx.tolist() == list(range(len(C.SYNTHETIC_CLASSES)))
    assert np.all(C.raw_to_scannet20(np.asarray(C.SYNTHETIC_RAW_IDS[20:])) == 255)


def test_class_raw_id_errors_list_known_names() -> None:
    assert C.class_raw_id("shower curtain") == 28
    with pytest.raises(KeyError, match="known: wall"):
        C.class_raw_id("spaceship")


def test_luts_are_read_only_and_float_labels_rejected() -> None:
    with pytest.raises(ValueError):
        C.scannet20_lut()[0] = 1
    with pytest.raises(TypeError, match="integers"):
        C.raw_to_scannet20(np.array([1.0]))
