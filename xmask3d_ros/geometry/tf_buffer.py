"""A time-indexed transform tree with tf2 semantics and no tf2 dependency.

Fed from ``/tf`` and ``/tf_static`` (live or from a bag), queried at message stamps. Each edge
``parent -> child`` keeps its samples in sorted numpy arrays (binary-search lookups, amortised O(1)
appends, out-of-order inserts shift in place).

Semantics (as tf2 unless stated):
- ``lookup(target, source, t)`` returns ``T_target_source`` (maps points in ``source`` into
  ``target``) at time ``t``; dynamic edges are interpolated between the bracketing samples (slerp
  + lerp), static edges are timeless. ``t == 0`` means the latest time common to every dynamic
  edge on the path.
- A dynamic sample older than ``newest - cache_duration`` is ignored on insert (tf2
  ``TF_OLD_DATA``) and samples that fall out of the window are dropped.
- A repeated stamp on one edge: tf2 warns ``TF_REPEATED_DATA``; here the later record replaces the
  earlier one and ``stats['repeated_stamp']`` counts it.
- Re-parenting (a child published under a new parent) and static<->dynamic switches: tf2 warns and
  follows the new data; here the edge's history is discarded and restarted with the new parent/kind
  (counted in ``stats``), so lookups before the switch then raise ``PastExtrapolationError``.
- ``tolerance_ns`` (not in tf2): a stamp up to that far outside an edge's history uses the nearest
  sample instead of raising; 0 gives tf2's strict behaviour.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from xmask3d_ros.geometry.transforms import SE3, normalize_quaternion

__all__ = [
    "ConnectivityError",
    "ExtrapolationError",
    "FutureExtrapolationError",
    "InvalidTransformError",
    "PastExtrapolationError",
    "TfBuffer",
    "TransformError",
    "TransformRecord",
    "UnknownFrameError",
]


class TransformError(Exception):
    """Base of every TF error (tf2's ``TransformException``)."""


class UnknownFrameError(TransformError, LookupError):
    """A frame was never seen (tf2 ``LookupException``)."""


class ConnectivityError(TransformError):
    """Both frames exist but lie in different trees (tf2 ``ConnectivityException``)."""


class ExtrapolationError(TransformError):
    """The stamp lies outside an edge's history (tf2 ``ExtrapolationException``)."""

    def __init__(self, msg: str, *, requested_ns: int, oldest_ns: int, newest_ns: int) -> None:
        super().__init__(msg)
        self.requested_ns = requested_ns
        self.oldest_ns = oldest_ns
        self.newest_ns = newest_ns


class PastExtrapolationError(ExtrapolationError):
    """Requested stamp older than the history: retrying will not help; drop the frame."""


class FutureExtrapolationError(ExtrapolationError):
    """Requested stamp newer than the latest data: TF may still arrive; retry later."""


class InvalidTransformError(TransformError, ValueError):
    """A record was rejected on insert (bad names, non-finite values, loop in the tree)."""


@dataclasses.dataclass
class TransformRecord:
    """One ``geometry_msgs/TransformStamped`` as plain data: ``T_parent_child`` at ``stamp_ns``."""

    parent_frame: str  # header.frame_id
    child_frame: str  # child_frame_id
    stamp_ns: int  # header.stamp in integer nanoseconds
    translation: npt.ArrayLike  # (3,) metres, child origin in parent
    rotation_xyzw: npt.ArrayLike  # (4,) rotation of child in parent, (x, y, z, w)


Vec = npt.NDArray[np.float64]


def _fmt_s(ns: int) -> str:
    return f"{ns / 1e9:.9f}"


def _quat_to_rot(q: Vec) -> Vec:
    """Unit xyzw -> (3, 3) with scalar math (cheaper than the vectorised path for one edge)."""
    x, y, z, w = float(q[0]), float(q[1]), float(q[2]), float(q[3])
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def _slerp_unit(a: Vec, b: Vec, t: float) -> Vec:
    dot = float(a @ b)
    if dot < 0.0:
        b, dot = -b, -dot
    if dot > 0.9999995:  # nearly parallel: normalised lerp is exact to ~1e-13 rad
        out = (1.0 - t) * a + t * b
    else:
        theta = math.acos(dot)
        s = math.sin(theta)
        out = (math.sin((1.0 - t) * theta) / s) * a + (math.sin(t * theta) / s) * b
    return out / math.sqrt(float(out @ out))


class _Edge:
    """History of ``T_parent_child`` for one child frame; samples live in ``[lo, hi)``."""

    __slots__ = ("parent", "static", "stamps", "trans", "quat", "lo", "hi", "static_rot")

    def __init__(self, parent: str, static: bool, capacity: int = 64) -> None:
        self.parent = parent
        self.static = static
        cap = 1 if static else capacity
        self.stamps = np.zeros(cap, dtype=np.int64)
        self.trans = np.zeros((cap, 3))
        self.quat = np.zeros((cap, 4))
        self.lo = 0
        self.hi = 0
        self.static_rot = np.eye(3)  # rotation of the static sample, computed once on insert

    def _make_room(self) -> None:
        n = self.hi - self.lo
        cap = self.stamps.size
        new_cap = cap * 2 if n >= cap // 2 else cap
        for name in ("stamps", "trans", "quat"):
            old = getattr(self, name)
            new = old if new_cap == cap else np.zeros((new_cap,) + old.shape[1:], old.dtype)
            new[:n] = old[self.lo : self.hi]
            setattr(self, name, new)
        self.lo, self.hi = 0, n

    def insert(self, stamp: int, t: Vec, q: Vec, cache_ns: int) -> str:
        """Store one sample; returns 'ok', 'repeated' or 'too_old'."""
        if self.static:
            self.stamps[0], self.trans[0], self.quat[0] = stamp, t, q
            self.static_rot = _quat_to_rot(q)
            self.lo, self.hi = 0, 1
            return "ok"
        lo, hi = self.lo, self.hi
        if hi > lo and stamp <= self.stamps[hi - 1]:
            newest = int(self.stamps[hi - 1])
            if stamp < newest - cache_ns:
                return "too_old"
            i = lo + int(np.searchsorted(self.stamps[lo:hi], stamp))
            if self.stamps[i] == stamp:
                self.trans[i], self.quat[i] = t, q
                return "repeated"
            if hi == self.stamps.size:
                self._make_room()
                i -= lo
                lo, hi = self.lo, self.hi
            for arr in (self.stamps, self.trans, self.quat):
                arr[i + 1 : hi + 1] = arr[i:hi]  # numpy copes with the overlap
        else:
            if hi == self.stamps.size:
                self._make_room()
                lo, hi = self.lo, self.hi
            i = hi
        self.stamps[i], self.trans[i], self.quat[i] = stamp, t, q
        self.hi = hi + 1
        cut = int(self.stamps[self.hi - 1]) - cache_ns
        if self.stamps[self.lo] < cut:
            self.lo += int(np.searchsorted(self.stamps[self.lo : self.hi], cut))
        return "ok"

    @property
    def newest(self) -> int:
        return int(self.stamps[self.hi - 1])

    @property
    def oldest(self) -> int:
        return int(self.stamps[self.lo])

    def sample(self, stamp: int, tol: int, child: str) -> tuple[Vec, Vec]:
        """(R (3, 3), t (3,)) at ``stamp``; raises Past/FutureExtrapolationError."""
        if self.static:
            return self.static_rot, self.trans[0]
        lo, hi = self.lo, self.hi
        s = self.stamps
        i = lo + int(np.searchsorted(s[lo:hi], stamp))
        if i < hi and s[i] == stamp:
            return _quat_to_rot(self.quat[i]), self.trans[i]
        if i == lo or i == hi:
            j = lo if i == lo else hi - 1
            gap = int(s[j]) - stamp if i == lo else stamp - int(s[j])
            if gap <= tol:
                return _quat_to_rot(self.quat[j]), self.trans[j]
            kind = "past" if i == lo else "future"
            cls = PastExtrapolationError if i == lo else FutureExtrapolationError
            only = " (only one sample)" if hi - lo == 1 else ""
            raise cls(
                f"lookup would require extrapolation into the {kind}: requested time "
                f"{_fmt_s(stamp)} but the {'earliest' if i == lo else 'latest'} data is at "
                f"{_fmt_s(int(s[j]))}{only}, when looking up transform from frame [{child}] to "
                f"frame [{self.parent}] (tolerance {tol / 1e9:g} s)",
                requested_ns=stamp, oldest_ns=self.oldest, newest_ns=self.newest,
            )
        s0, s1 = int(s[i - 1]), int(s[i])
        alpha = (stamp - s0) / (s1 - s0)
        q = _slerp_unit(self.quat[i - 1], self.quat[i], alpha)
        t = (1.0 - alpha) * self.trans[i - 1] + alpha * self.trans[i]
        return _quat_to_rot(q), t


_STATUS_COUNTER = {"ok": "inserted", "repeated": "repeated_stamp", "too_old": "old_data_ignored"}


class TfBuffer:
    """Transform tree with bounded, time-indexed history per edge (thread-safe).

    ``cache_duration_s``: history kept per dynamic edge, relative to that edge's newest sample.
    """

    def __init__(self, cache_duration_s: float = 10.0) -> None:
        if not (cache_duration_s > 0 and math.isfinite(cache_duration_s)):
            raise ValueError(f"cache_duration_s must be finite and > 0, got {cache_duration_s}")
        self._cache_ns = int(round(cache_duration_s * 1e9))
        self._edges: dict[str, _Edge] = {}  # child frame -> edge to its parent
        self._frames: set[str] = set()
        self._lock = threading.Lock()
        self.stats: dict[str, int] = {
            "inserted": 0,
            "repeated_stamp": 0,
            "old_data_ignored": 0,
            "reparented": 0,
            "static_dynamic_switch": 0,
        }

    @staticmethod
    def _name(frame: str) -> str:
        return frame[1:] if frame.startswith("/") else frame  # tf2 strips a leading slash

    def set_transform(self, record: TransformRecord, static: bool = False) -> None:
        """Insert one transform; raises InvalidTransformError for records tf2 would reject."""
        parent, child = self._name(record.parent_frame), self._name(record.child_frame)
        if not parent or not child:
            raise InvalidTransformError(f"empty frame id (parent {parent!r}, child {child!r})")
        if parent == child:
            raise InvalidTransformError(f"self transform: parent and child are both {child!r}")
        stamp = int(record.stamp_ns)
        if stamp < 0:
            raise InvalidTransformError(f"negative stamp {stamp} ns for {parent} -> {child}")
        t = np.asarray(record.translation, dtype=np.float64).reshape(-1)
        if t.shape != (3,) or not np.all(np.isfinite(t)):
            raise InvalidTransformError(
                f"translation of {parent} -> {child} must be 3 finite values, got {t.tolist()}"
            )
        try:
            q = normalize_quaternion(record.rotation_xyzw)
        except ValueError as err:
            raise InvalidTransformError(f"rotation of {parent} -> {child}: {err}") from err
        with self._lock:
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                if edge is None or edge.parent != parent:
                    self._check_no_loop(parent, child)
                if edge is not None:
                    key = "reparented" if edge.parent != parent else "static_dynamic_switch"
                    self.stats[key] += 1
                edge = self._edges[child] = _Edge(parent, static)
            status = edge.insert(stamp, t, q, self._cache_ns)
            self._frames.update((parent, child))
            self.stats[_STATUS_COUNTER[status]] += 1

    def _check_no_loop(self, parent: str, child: str) -> None:
        frame: str | None = parent
        while frame is not None:
            if frame == child:
                raise InvalidTransformError(f"{parent} -> {child} would close a loop in the TF tree")
            edge = self._edges.get(frame)
            frame = edge.parent if edge is not None else None

    def _chain(self, frame: str) -> list[str]:
        """``[frame, parent, grandparent, ..., root]``."""
        chain = [frame]
        edge = self._edges.get(frame)
        while edge is not None:
            chain.append(edge.parent)
            edge = self._edges.get(edge.parent)
        return chain

    def _path(self, target: str, source: str) -> tuple[list[str], list[str]]:
        """Child frames of the edges from ``source`` and from ``target`` up to their common ancestor."""
        for f in (target, source):
            if f not in self._frames:
                known = sorted(self._frames)
                shown = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
                raise UnknownFrameError(
                    f'"{f}" passed to lookup does not exist (known frames: {shown or "none"})'
                )
        src_chain = self._chain(source)
        depth = {f: i for i, f in enumerate(src_chain)}
        tgt_chain = self._chain(target)
        for j, f in enumerate(tgt_chain):
            if f in depth:
                return src_chain[: depth[f]], tgt_chain[:j]
        raise ConnectivityError(
            f'could not find a connection between "{target}" and "{source}" because they are not '
            f'part of the same tree (roots "{tgt_chain[-1]}" and "{src_chain[-1]}")'
        )

    def _latest_common(self, edges: Sequence[str]) -> int:
        dyn = [self._edges[c].newest for c in edges if not self._edges[c].static]
        return min(dyn) if dyn else 0

    def latest_common_time(self, target_frame: str, source_frame: str) -> int:
        """Newest stamp (ns) at which every dynamic edge between the frames has data (0: all static)."""
        target, source = self._name(target_frame), self._name(source_frame)
        with self._lock:
            up, down = self._path(target, source)
            return self._latest_common(up + down)

    def lookup(
        self, target_frame: str, source_frame: str, stamp_ns: int, tolerance_ns: int = 0
    ) -> SE3:
        """``T_target_source`` at ``stamp_ns`` (0 = latest common time); raises TransformError subtypes."""
        target, source = self._name(target_frame), self._name(source_frame)
        stamp, tol = int(stamp_ns), int(tolerance_ns)
        if tol < 0:
            raise ValueError(f"tolerance_ns must be >= 0, got {tol}")
        with self._lock:
            up, down = self._path(target, source)
            if stamp == 0:
                stamp = self._latest_common(up + down)
            R_s, t_s = self._compose(up, stamp, tol)  # T_ancestor_source
            R_t, t_t = self._compose(down, stamp, tol)  # T_ancestor_target
        return SE3._trusted(R_t.T @ R_s, R_t.T @ (t_s - t_t))

    def _compose(self, children: Sequence[str], stamp: int, tol: int) -> tuple[Any, Any]:
        if not children:
            return np.eye(3), np.zeros(3)
        R, t = self._edges[children[0]].sample(stamp, tol, children[0])
        for child in children[1:]:  # walking up: T_parent_x = T_parent_child @ T_child_x
            Rc, tc = self._edges[child].sample(stamp, tol, child)
            R, t = Rc @ R, Rc @ t + tc
        return R, t

    def can_transform(
        self, target_frame: str, source_frame: str, stamp_ns: int, tolerance_ns: int = 0
    ) -> bool:
        """Whether :meth:`lookup` would succeed now (non-blocking)."""
        try:
            self.lookup(target_frame, source_frame, stamp_ns, tolerance_ns)
        except TransformError:
            return False
        return True

    def frames(self) -> list[str]:
        """Every frame seen so far, sorted."""
        with self._lock:
            return sorted(self._frames)

    def parent_of(self, frame: str) -> str | None:
        """Current parent of ``frame`` (None for a root); UnknownFrameError if never seen."""
        name = self._name(frame)
        with self._lock:
            if name not in self._frames:
                raise UnknownFrameError(f'"{name}" does not exist')
            edge = self._edges.get(name)
            return edge.parent if edge is not None else None

    def clear(self) -> None:
        """Forget every transform (e.g. when a bag loops or sim time jumps back); keeps stats."""
        with self._lock:
            self._edges.clear()
            self._frames.clear()
