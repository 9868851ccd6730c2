"""numpy arrays and pipeline answers -> ROS messages (no per-point Python loops).

Clouds are built from one numpy structured array whose dtype matches the PointField layout, so the
message ``data`` is a single ``tobytes()``. Field layouts (little-endian, ``is_dense`` true):

- semantic cloud: ``x y z`` float32, ``rgb`` float32 (0x00RRGGBB bit pattern, what RViz's RGB8
  transformer reads), ``label`` uint16 (65535 = unknown), ``score`` float32 (NaN = no semantics);
  point_step 24.
- query cloud (highlight): ``x y z`` float32, ``intensity`` float32 (= score), ``label`` uint16;
  point_step 20.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from xmask3d_ros.msg import LabelResult, QueryResult, SemanticObject
from xmask3d_ros.pipeline.answers import QueryAnswer
from xmask3d_ros.pipeline.palette import UNKNOWN_RGB, label_colors

__all__ = [
    "QUERY_CLOUD_DTYPE",
    "SEMANTIC_CLOUD_DTYPE",
    "UNKNOWN_RGB",
    "cloud_to_array",
    "diagnostic_array",
    "header",
    "label_colors",
    "legend_markers",
    "pack_rgb",
    "diagnostic_status",
    "query_cloud",
    "query_cloud_from_answer",
    "query_result_msg",
    "rss_bytes",
    "semantic_cloud_from_answer",
    "semantic_cloud",
    "stamp_from_ns",
    "stamp_to_ns",
]

SEMANTIC_CLOUD_DTYPE = np.dtype(
    {
        "names": ["x", "y", "z", "rgb", "label", "score"],
        "formats": ["<f4", "<f4", "<f4", "<f4", "<u2", "<f4"],
        "offsets": [0, 4, 8, 12, 16, 20],
        "itemsize": 24,
    }
)
QUERY_CLOUD_DTYPE = np.dtype(
    {
        "names": ["x", "y", "z", "intensity", "label"],
        "formats": ["<f4", "<f4", "<f4", "<f4", "<u2"],
        "offsets": [0, 4, 8, 12, 16],
        "itemsize": 20,
    }
)
_POINTFIELD_TYPE = {
    np.dtype("<f4"): PointField.FLOAT32,
    np.dtype("<u2"): PointField.UINT16,
    np.dtype("<u4"): PointField.UINT32,
}
_NUMPY_TYPE = {v: k for k, v in _POINTFIELD_TYPE.items()}

def stamp_from_ns(ns: int) -> Time:
    """builtin_interfaces/Time from integer nanoseconds (>= 0)."""
    ns = max(int(ns), 0)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def stamp_to_ns(stamp: Time) -> int:
    """Integer nanoseconds of a builtin_interfaces/Time."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header(frame_id: str, stamp_ns: int) -> Header:
    """std_msgs/Header in ``frame_id`` at ``stamp_ns``."""
    return Header(frame_id=frame_id, stamp=stamp_from_ns(stamp_ns))


def pack_rgb(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """(N, 3) uint8 -> (N,) float32 whose bits are 0x00RRGGBB (RViz's packed ``rgb``)."""
    rgb = np.asarray(rgb, dtype=np.uint32)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    return packed.astype("<u4").view("<f4")


def _fields(dtype: np.dtype) -> list[PointField]:
    out = []
    for name in dtype.names or ():
        ftype, offset = dtype.fields[name][:2]
        out.append(
            PointField(name=name, offset=offset, datatype=_POINTFIELD_TYPE[ftype], count=1)
        )
    return out


def _cloud(arr: np.ndarray, frame_id: str, stamp_ns: int) -> PointCloud2:
    msg = PointCloud2()
    msg.header = header(frame_id, stamp_ns)
    msg.height = 1
    msg.width = int(arr.shape[0])
    msg.fields = _fields(arr.dtype)
    msg.is_bigendian = False
    msg.point_step = arr.dtype.itemsize
    msg.row_step = msg.point_step * msg.width
    msg.is_dense = True
    msg.data = arr.tobytes()
    return msg


def _positions(positions: npt.ArrayLike) -> npt.NDArray[np.float32]:
    pos = np.asarray(positions, dtype=np.float32).reshape(-1, 3)
    return pos


def semantic_cloud(
    positions: npt.ArrayLike,
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    *,
    frame_id: str,
    stamp_ns: int,
) -> PointCloud2:
    """(N, 3) positions, (N,) uint16 labels and (N,) float32 scores -> the semantic cloud."""
    pos = _positions(positions)
    arr = np.zeros(pos.shape[0], dtype=SEMANTIC_CLOUD_DTYPE)
    arr["x"], arr["y"], arr["z"] = pos[:, 0], pos[:, 1], pos[:, 2]
    lab = np.asarray(labels).reshape(-1).astype(np.uint16)
    arr["label"] = lab
    arr["rgb"] = pack_rgb(label_colors(lab))
    arr["score"] = np.asarray(scores, dtype=np.float32).reshape(-1)
    return _cloud(arr, frame_id, stamp_ns)


def query_cloud(
    positions: npt.ArrayLike,
    intensity: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    frame_id: str,
    stamp_ns: int,
) -> PointCloud2:
    """Highlight-mode cloud: (N, 3) positions, (N,) float32 intensity = score, (N,) labels."""
    pos = _positions(positions)
    arr = np.zeros(pos.shape[0], dtype=QUERY_CLOUD_DTYPE)
    arr["x"], arr["y"], arr["z"] = pos[:, 0], pos[:, 1], pos[:, 2]
    arr["intensity"] = np.asarray(intensity, dtype=np.float32).reshape(-1)
    arr["label"] = np.asarray(labels).reshape(-1).astype(np.uint16)
    return _cloud(arr, frame_id, stamp_ns)


def semantic_cloud_from_answer(answer: QueryAnswer) -> PointCloud2:
    """The semantic cloud of a query answer (segment labels, best score)."""
    return semantic_cloud(
        answer.positions, answer.voxel_label, answer.voxel_score,
        frame_id=answer.frame_id, stamp_ns=answer.stamp_ns,
    )


def query_cloud_from_answer(answer: QueryAnswer) -> PointCloud2:
    """The highlight cloud of a query answer: intensity = the best label score (NaN -> 0)."""
    score = np.nan_to_num(np.asarray(answer.voxel_score, dtype=np.float32), nan=0.0)
    return query_cloud(
        answer.positions, score, answer.voxel_label,
        frame_id=answer.frame_id, stamp_ns=answer.stamp_ns,
    )


def cloud_to_array(msg: PointCloud2) -> np.ndarray:
    """Read a little-endian PointCloud2 of scalar fields back into a structured array."""
    if msg.is_bigendian:
        raise ValueError("big-endian clouds are not supported")
    dtype = np.dtype(
        {
            "names": [f.name for f in msg.fields],
            "formats": [_NUMPY_TYPE[f.datatype] for f in msg.fields],
            "offsets": [f.offset for f in msg.fields],
            "itemsize": msg.point_step,
        }
    )
    n = msg.width * msg.height
    return np.frombuffer(bytes(msg.data), dtype=dtype, count=n)


def _point(v: Sequence[float]) -> Point:
    return Point(x=float(v[0]), y=float(v[1]), z=float(v[2]))


def query_result_msg(answer: QueryAnswer) -> QueryResult:
    """QueryAnswer -> xmask3d_ros/QueryResult, field by field."""
    msg = QueryResult()
    msg.header = header(answer.frame_id, answer.stamp_ns)
    msg.mode = int(answer.mode)
    msg.min_score = float(answer.min_score)
    msg.map_voxels = int(answer.map_voxels)
    msg.latency_ms = float(answer.latency_ms)
    results = []
    for r in answer.results:
        objs = [
            SemanticObject(
                label=o.label,
                score=float(o.score),
                centroid=_point(o.centroid),
                bbox_min=_point(o.bbox_min),
                bbox_max=_point(o.bbox_max),
                num_voxels=int(o.num_voxels),
            )
            for o in r.objects
        ]
        results.append(
            LabelResult(
                label=r.label,
                label_index=int(r.label_index),
                num_voxels=int(r.num_voxels),
                max_score=float(r.max_score),
                objects=objs,
            )
        )
    msg.results = results
    return msg


def legend_markers(
    answer: QueryAnswer, *, namespace: str = "xmask3d_legend", text_height_m: float = 0.15
) -> MarkerArray:
    """Text markers (label and score) at each object's centroid, coloured like the cloud.

    The first marker is a DELETEALL so a new answer replaces the previous legend.
    """
    out = MarkerArray()
    clear = Marker(action=Marker.DELETEALL, ns=namespace)
    clear.header = header(answer.frame_id, answer.stamp_ns)
    out.markers.append(clear)
    mid = 0
    for r in answer.results:
        color = label_colors(np.array([r.label_index]))[0] / 255.0
        for o in r.objects:
            m = Marker()
            m.header = header(answer.frame_id, answer.stamp_ns)
            m.ns = namespace
            m.id = mid
            mid += 1
            m.type = Marker.TEXT_VIEW_FACING
            m.action = Marker.ADD
            m.pose.position = _point(o.centroid)
            m.pose.position.z = float(o.bbox_max[2]) + text_height_m
            m.pose.orientation.w = 1.0
            m.scale.z = float(text_height_m)
            m.color.r, m.color.g, m.color.b = (float(c) for c in color)
            m.color.a = 1.0
            m.text = f"{o.label} {o.score:.2f}"
            out.markers.append(m)
    return out


LEVELS = {"OK": DiagnosticStatus.OK, "WARN": DiagnosticStatus.WARN, "ERROR": DiagnosticStatus.ERROR,
          "STALE": DiagnosticStatus.STALE}


def diagnostic_status(
    name: str,
    level: str,
    message: str,
    values: Mapping[str, object],
    *,
    hardware_id: str = "",
) -> DiagnosticStatus:
    """One DiagnosticStatus; ``level`` is OK / WARN / ERROR / STALE; values become KeyValues."""
    return DiagnosticStatus(
        level=LEVELS[level],
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()],
    )


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def diagnostic_array(statuses: Iterable[DiagnosticStatus], *, stamp_ns: int) -> DiagnosticArray:
    """A DiagnosticArray as diagnostic_updater publishes it (header stamp = now, no frame)."""
    msg = DiagnosticArray()
    msg.header = header("", stamp_ns)
    msg.status = list(statuses)
    return msg


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc), 0 where unknown."""
    try:
        with open(f"/proc/{os.getpid()}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def wall_ns() -> int:
    """Wall-clock nanoseconds (for diagnostics headers when no ROS clock is at hand)."""
    return time.time_ns()
