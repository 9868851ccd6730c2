"""Partitions equal the paper's appendix table (A.4); label maps round-trip."""

from __future__ import annotations

import numpy as np
import pytest

from xmask3d_ros.data.classes import raw_to_scannet20
from xmask3d_ros.data.labels import (
    S3DIS_CLASSES,
    SCANNET200_CLASSES,
    SCANNET200_IGNORE,
    SCANNET200_RAW_IDS,
    label_set,
    raw_to_scannet200,
)
from xmask3d_ros.data.partitions import PARTITION_NAMES, get_partition

# Transcribed from the paper's appendix table (xmask3d-paper.txt, "Partition | Base Categories |
# Novel Categories"), spelled as printed; the paper writes "showercurtain" in one word.
PAPER_TABLE = {
    "scannet_B15N4": (
        "wall, floor, cabinet, bed, chair, table, door, window, picture, counter, curtain, "
        "refrigerator, showercurtain, sink, bathtub",
        "sofa, bookshelf, desk, toilet"),
    "scannet_B12N7": (
        "wall, floor, cabinet, sofa, door, window, counter, desk, curtain, refrigerator, "
        "showercurtain, toilet",
        "bed, chair, table, bookshelf, picture, sink, bathtub"),
    "scannet_B10N9": (
        "wall, floor, cabinet, bed, chair, sofa, table, door, window, showercurtain, curtain",
        "bookshelf, picture, counter, desk, refrigerator, toilet, sink, bathtub"),
    "s3dis_B8N4": (
        "ceiling, floor, wall, beam, column, door, chair, board",
        "window, table, sofa, bookcase"),
    "s3dis_B6N6": (
        "ceiling, wall, beam, column, chair, bookcase",
        "floor, window, door, table, sofa, board"),
}
# The B10/N9 cells wrap over two lines and the text extraction puts "showercurtain" on the
# base side (11 base, 8 novel names). The split's own name (10/9), the reference config and
# PLA (novel indices [9,10,11,12,14,15,16,17,18], 15 = shower curtain) make it novel; the test
# moves it explicitly below so the transcription stays verbatim.

# ScanNet200 lists are not in the paper; from the reference configs (reference-notes §2.4).
NOTES_200 = {
    "scannet200_B170N30": "pillow, box, clothes, counter, dresser, keyboard, backpack, printer, "
    "shower curtain, bin, copier, sofa chair, recycling bin, clock, guitar, seat, ladder, cup, "
    "toaster, ironing board, toilet seat cover dispenser, furniture, cart, projector, shower "
    "floor, laundry detergent, bathroom stall door, dumbbell, folded chair, mattress",
    "scannet200_B150N50": "couch, window, bookshelf, coffee table, kitchen cabinet, clothes, "
    "counter, end table, bag, backpack, printer, microwave, shoe, bin, washing machine, sofa "
    "chair, paper, blinds, radiator, recycling bin, soap dispenser, bucket, stand, light, pipe, "
    "bathroom stall, cup, storage bin, coffee maker, machine, fireplace, mini fridge, hat, cart, "
    "light switch, decoration, plunger, stuffed animal, dish rack, broom, range hood, water "
    "pitcher, paper bag, bathroom vanity, ceiling light, trash bin, stair rail, coat rack, "
    "calendar, poster",
}


def _names(text: str) -> set[str]:
    return {n.strip().replace("showercurtain", "shower curtain") for n in text.split(",")}


@pytest.mark.parametrize("name", sorted(PAPER_TABLE))
def test_partition_equals_paper_table(name: str) -> None:
    base, novel = (_names(t) for t in PAPER_TABLE[name])
    if name == "scannet_B10N9":
        base.discard("shower curtain")
        novel.add("shower curtain")
    p = get_partition(name)
    assert set(p.base) == base and set(p.novel) == novel
    assert len(p.base) == int(name.split("_B")[1].split("N")[0])
    assert len(p.novel) == int(name.rsplit("N", 1)[1])


def test_s3dis_b6n6_follows_paper_not_pla() -> None:
    p = get_partition("s3dis_B6N6")
    assert "sofa" in p.novel and "bookcase" in p.base  # PLA has the opposite
    assert p.novel_indices.tolist() == [1, 5, 6, 7, 9, 11]


def test_reference_index_lists() -> None:
    assert get_partition("scannet_B15N4").novel_indices.tolist() == [5, 9, 12, 16]
    assert get_partition("scannet_B12N7").novel_indices.tolist() == [3, 4, 6, 9, 10, 17, 18]
    assert get_partition("scannet_B10N9").novel_indices.tolist() == [9, 10, 11, 12, 14, 15, 16,
                                                                      17, 18]
    assert get_partition("s3dis_B8N4").novel_indices.tolist() == [5, 7, 9, 10]


@pytest.mark.parametrize("name", sorted(NOTES_200))
def test_scannet200_partitions(name: str) -> None:
    p = get_partition(name)
    novel = _names(NOTES_200[name])
    assert set(p.novel) == novel and len(novel) == int(name.rsplit("N", 1)[1])
    assert set(p.base) == set(SCANNET200_CLASSES) - novel


def test_every_partition_is_a_clean_split() -> None:
    for name in PARTITION_NAMES:
        p = get_partition(name)
        ev = p.evaluated_indices
        assert len(set(ev.tolist())) == len(p.base) + len(p.novel)
        excluded = {p.classes.index(c) for c in p.labels.excluded}
        assert set(ev.tolist()) | excluded == set(range(len(p.classes)))


def test_train_and_binary_labels() -> None:
    p = get_partition("scannet_B15N4")
    lab = np.array([0, 5, 19, 255, -100, 18, 16])
    assert p.train_labels(lab).tolist() == [0, 15, 15, 15, 15, 14, 15]
    assert p.binary_labels(lab).tolist() == [1, 0, -1, -1, -1, 1, 0]
    with pytest.raises(ValueError, match="unknown partition"):
        get_partition("B15N4")


def test_label_maps_round_trip() -> None:
    assert len(SCANNET200_CLASSES) == len(SCANNET200_RAW_IDS) == 200
    assert len(set(SCANNET200_CLASSES)) == 200 and len(S3DIS_CLASSES) == 13
    ids = np.array(SCANNET200_RAW_IDS)
    assert raw_to_scannet200(ids).tolist() == list(range(200))
    assert raw_to_scannet200(np.array([0, 12, 1192, -5])).tolist() == [SCANNET200_IGNORE] * 4
    s20 = label_set("scannet20")
    assert s20.raw_ids is not None
    assert raw_to_scannet20(np.array(s20.raw_ids)).tolist() == list(range(20))
    for name in ("scannet20", "scannet200", "synthetic"):
        ls = label_set(name)
        assert ls.raw_ids is not None
        for i, c in enumerate(ls.classes):
            assert ls.index(c) == i
