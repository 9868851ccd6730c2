"""Base/novel category partitions of the paper (XMask3D appendix A.4; reference-notes §2.4).

The paper's appendix table is the authority: where PLA differs (S3DIS B6/N6, where PLA has
bookcase novel and sofa base) the paper's lists are used. The paper gives no ScanNet200 table;
those lists come from the reference configs (``config/scannet200/xmask3d_scannet200_B*.yaml``).

A :class:`Partition` names the base and novel classes of a label set (``data/labels.py``);
excluded classes (ScanNet otherfurniture, S3DIS clutter) are in neither and never trained nor
evaluated. Training compacts base classes to ``0..B-1`` and maps everything else to ``B`` (the
CE ignore index of the reference, §2.1) with :meth:`Partition.train_labels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from xmask3d_ros.data.labels import LabelSet, label_set

__all__ = ["PARTITION_NAMES", "Partition", "get_partition", "make_partition"]


@dataclass(frozen=True)
class Partition:
    """Base/novel split of a label set; class lists keep the label set's order."""

    name: str  # e.g. "scannet_B15N4"
    labels: LabelSet
    base: tuple[str, ...]
    novel: tuple[str, ...]

    def __post_init__(self) -> None:
        known = set(self.labels.classes)
        for n in self.base + self.novel:
            if n not in known:
                raise ValueError(f"partition {self.name}: {n!r} is not a {self.labels.name} class")
        if set(self.base) & set(self.novel):
            raise ValueError(f"partition {self.name}: {set(self.base) & set(self.novel)} are "
                             "both base and novel")
        if (set(self.base) | set(self.novel)) & set(self.labels.excluded):
            raise ValueError(f"partition {self.name}: excluded classes {self.labels.excluded} "
                             "cannot be base or novel")

    @property
    def classes(self) -> tuple[str, ...]:
        """All class names of the label set (index = stored label)."""
        return self.labels.classes

    @property
    def base_indices(self) -> npt.NDArray[np.int64]:
        """Label-set indices of the base classes (ascending)."""
        return np.array(sorted(self.labels.index(n) for n in self.base), dtype=np.int64)

    @property
    def novel_indices(self) -> npt.NDArray[np.int64]:
        """Label-set indices of the novel classes (ascending)."""
        return np.array(sorted(self.labels.index(n) for n in self.novel), dtype=np.int64)

    @property
    def evaluated_indices(self) -> npt.NDArray[np.int64]:
        """Base and novel indices together, ascending (excluded classes left out)."""
        return np.sort(np.concatenate([self.base_indices, self.novel_indices]))

    @property
    def num_base(self) -> int:
        return len(self.base)

    def base_names_ordered(self) -> tuple[str, ...]:
        """Base class names in compact training order (label-set order)."""
        return tuple(self.labels.classes[i] for i in self.base_indices)

    def train_labels(self, labels: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Label-set indices -> compact base indices 0..B-1; novel, excluded and ignored -> B."""
        lab = np.asarray(labels).astype(np.int64)
        lut = np.full(len(self.labels.classes) + 1, self.num_base, dtype=np.int64)
        lut[self.base_indices] = np.arange(self.num_base)
        ok = (lab >= 0) & (lab < len(self.labels.classes))
        return np.where(ok, lut[np.where(ok, lab, len(self.labels.classes))], self.num_base)

    def binary_labels(self, labels: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """1 = base, 0 = novel, -1 = excluded/ignored (the binary head's target, §1.10)."""
        lab = np.asarray(labels).astype(np.int64)
        n = len(self.labels.classes)
        lut = np.full(n + 1, -1, dtype=np.int64)
        lut[self.base_indices] = 1
        lut[self.novel_indices] = 0
        return lut[np.where((lab >= 0) & (lab < n), lab, n)]


def make_partition(name: str, label_set_name: str, novel: Sequence[str],
                   base: Sequence[str] | None = None) -> Partition:
    """A partition of ``label_set_name``; ``base`` None = every non-excluded, non-novel class."""
    ls = label_set(label_set_name)
    novel_t = tuple(novel)
    if base is None:
        base_t = tuple(c for c in ls.classes if c not in novel_t and c not in ls.excluded)
    else:
        base_t = tuple(base)
    return Partition(name, ls, base_t, novel_t)


def _ordered(ls_name: str, names: Sequence[str]) -> tuple[str, ...]:
    ls = label_set(ls_name)
    return tuple(sorted(names, key=ls.index))


# Novel classes per partition; base = the remaining non-excluded classes, which for ScanNet-20
# and S3DIS is exactly the paper's base list (checked by test/data/test_partitions.py).
_NOVEL: dict[str, tuple[str, tuple[str, ...]]] = {
    "scannet_B15N4": ("scannet20", ("sofa", "bookshelf", "desk", "toilet")),
    "scannet_B12N7": ("scannet20", ("bed", "chair", "table", "bookshelf", "picture", "sink",
                                    "bathtub")),
    "scannet_B10N9": ("scannet20", ("bookshelf", "picture", "counter", "desk", "refrigerator",
                                    "shower curtain", "toilet", "sink", "bathtub")),
    "scannet200_B170N30": ("scannet200", (
        "pillow", "box", "clothes", "counter", "dresser", "keyboard", "backpack", "printer",
        "shower curtain", "bin", "copier", "sofa chair", "recycling bin", "clock", "guitar",
        "seat", "ladder", "cup", "toaster", "ironing board", "toilet seat cover dispenser",
        "furniture", "cart", "projector", "shower floor", "laundry detergent",
        "bathroom stall door", "dumbbell", "folded chair", "mattress")),
    "scannet200_B150N50": ("scannet200", (
        "couch", "window", "bookshelf", "coffee table", "kitchen cabinet", "clothes", "counter",
        "end table", "bag", "backpack", "printer", "microwave", "shoe", "bin",
        "washing machine", "sofa chair", "paper", "blinds", "radiator", "recycling bin",
        "soap dispenser", "bucket", "stand", "light", "pipe", "bathroom stall", "cup",
        "storage bin", "coffee maker", "machine", "fireplace", "mini fridge", "hat", "cart",
        "light switch", "decoration", "plunger", "stuffed animal", "dish rack", "broom",
        "range hood", "water pitcher", "paper bag", "bathroom vanity", "ceiling light",
        "trash bin", "stair rail", "coat rack", "calendar", "poster")),
    "s3dis_B8N4": ("s3dis", ("window", "table", "sofa", "bookcase")),
    # the paper's table (PLA instead: floor, window, door, table, bookcase, board)
    "s3dis_B6N6": ("s3dis", ("floor", "window", "door", "table", "sofa", "board")),
    # synthetic rooms: ScanNet B15/N4's novel classes over the synthetic vocabulary
    "synthetic_B15N4": ("synthetic", ("sofa", "bookshelf", "desk", "toilet")),
}
PARTITION_NAMES: tuple[str, ...] = tuple(_NOVEL)


def get_partition(name: str) -> Partition:
    """The partition called ``name`` (see :data:`PARTITION_NAMES`); ValueError lists them."""
    if name not in _NOVEL:
        raise ValueError(f"unknown partition {name!r}; known: {', '.join(PARTITION_NAMES)}")
    ls_name, novel = _NOVEL[name]
    return make_partition(name, ls_name, _ordered(ls_name, novel))
