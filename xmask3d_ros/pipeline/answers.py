"""Plain result types of a text query, mirroring ``msg/QueryResult.msg``, ``LabelResult.msg`` and
``SemanticObject.msg`` (the ROS adapter copies them field by field), plus the per-voxel arrays
the semantic / query clouds are built from.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from xmask3d_ros.pipeline.errors import QueryError

__all__ = ["UNKNOWN_LABEL", "LabelAnswer", "ObjectAnswer", "QueryAnswer", "QueryMode"]

# Label index of "unknown" voxels in the semantic cloud's uint16 ``label`` field (TextQuery.msg).
UNKNOWN_LABEL = 65535

Vec3 = tuple[float, float, float]


class QueryMode(enum.IntEnum):
    """``TextQuery.MODE_SEGMENT`` / ``MODE_HIGHLIGHT``."""

    SEGMENT = 0  # each voxel takes the best label, or unknown below min_score
    HIGHLIGHT = 1  # each label scored independently (a voxel may show several)

    @classmethod
    def parse(cls, value: object) -> QueryMode:
        """A mode from a QueryMode, the message's uint8 (0, 1) or a name ('segment', 'highlight')."""
        if isinstance(value, QueryMode):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            try:
                return cls(int(value))
            except ValueError:
                pass
        raise QueryError(f"mode: {value!r} is not a query mode, expected 0/'segment' or 1/'highlight'")


@dataclasses.dataclass(frozen=True)
class ObjectAnswer:
    """``SemanticObject``: one connected component of voxels carrying a label."""

    label: str
    score: float  # mean score of the object's voxels for this label (cosine)
    centroid: Vec3  # mean of the voxel positions, map frame (m)
    bbox_min: Vec3  # smallest voxel-centre coordinates minus half a voxel (m)
    bbox_max: Vec3  # largest voxel-centre coordinates plus half a voxel (m)
    num_voxels: int


@dataclasses.dataclass(frozen=True)
class LabelAnswer:
    """``LabelResult``: what the map holds for one label of the query."""

    label: str  # as normalised (stripped)
    label_index: int  # index in the query's label list = value in the cloud's label field
    num_voxels: int  # segment: voxels assigned this label; highlight: voxels >= min_score
    max_score: float  # best voxel score for the label; NaN when no voxel has semantics
    objects: tuple[ObjectAnswer, ...]  # sorted by score, highest first


@dataclasses.dataclass(frozen=True, eq=False)
class QueryAnswer:
    """``QueryResult`` plus the per-voxel arrays of the answer (consistent with it)."""

    stamp_ns: int  # stamp of the newest frame integrated when the answer was computed
    frame_id: str  # the map frame
    mode: QueryMode
    min_score: float  # the threshold actually used
    results: tuple[LabelAnswer, ...]  # one per label, in query order
    map_voxels: int
    latency_ms: float  # text encoding + scoring + objects
    dropped_labels: tuple[str, ...]  # empty / duplicate labels dropped from the query
    positions: npt.NDArray[np.float32]  # (N, 3) voxel positions, map frame
    voxel_label: npt.NDArray[np.uint16]  # (N,) best label index, UNKNOWN_LABEL below min_score
    voxel_score: npt.NDArray[np.float32]  # (N,) best score over the labels, NaN = no semantics
    scores: npt.NDArray[np.float32] | None  # (N, L) every label's score (highlight mode only)
    voxel_object: npt.NDArray[np.int32]  # (N,) index into ``objects`` of the voxel's object
    # (for its ``voxel_label``), -1 when it is in none (unknown, or a component too small)
    timings_ms: Mapping[str, float]  # per stage: encode, score, objects

    @property
    def objects(self) -> tuple[ObjectAnswer, ...]:
        """Every object of the answer: label by label in query order, each by score."""
        return tuple(o for r in self.results for o in r.objects)

    @property
    def labels(self) -> tuple[str, ...]:
        """The query's labels after normalisation, in order."""
        return tuple(r.label for r in self.results)

    def result(self, label: str) -> LabelAnswer:
        """The entry of ``label`` (as normalised); KeyError lists the labels."""
        for r in self.results:
            if r.label == label.strip():
                return r
        raise KeyError(f"{label!r} is not a label of this query; labels: {', '.join(self.labels)}")
