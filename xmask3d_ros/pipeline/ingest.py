"""Camera messages -> synchronised, posed frames; shared by the ROS node and the bag replay.

:class:`FrameAssembler` decodes ``sensor_msgs`` Image / CameraInfo messages (duck-typed, see
:mod:`xmask3d_ros.pipeline.decode`), matches them with the project's :class:`TimeSynchronizer`
(``cfg.sync``) or takes sets already matched by message_filters (:meth:`FrameAssembler.add_synced`),
and keeps each matched frame in a bounded queue until its pose is known: ``T_map_cam`` is looked
up at the IMAGE stamp (never "latest") into ``cfg.node.map_frame``.

TF outcomes in :meth:`FrameAssembler.poll`: success -> a :class:`PosedFrame`; future extrapolation,
unknown frame or no connection yet -> keep waiting; past extrapolation -> drop
(``tf_dropped_past``); waiting longer than ``cfg.node.tf_wait_max_age_s`` (relative to ``now_ns``
and to the newest image stamp seen) -> drop (``tf_dropped_age``); queue full -> oldest dropped
(``tf_queue_overflow``). Depth is assumed registered to colour; a depth image of another size with
the same aspect ratio is resized to the colour size by nearest neighbour, else the set is rejected.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from xmask3d_ros.config.perception import PerceptionConfig
from xmask3d_ros.geometry.camera import PinholeCamera
from xmask3d_ros.geometry.frame import PosedFrame, RgbdFrame
from xmask3d_ros.geometry.sync import TimeSynchronizer
from xmask3d_ros.geometry.tf_buffer import PastExtrapolationError, TransformError
from xmask3d_ros.geometry.transforms import SE3
from xmask3d_ros.pipeline.decode import (
    DecodeError,
    camera_from_info,
    decode_compressed_depth,
    decode_compressed_rgb,
    decode_depth,
    decode_rgb,
    stamp_ns,
)

__all__ = ["FrameAssembler", "TransformLookup", "resize_nearest"]

_RGB, _DEPTH, _INFO = 0, 1, 2
_ASPECT_TOL = 1e-2  # relative: 640x480 vs 1280x960 share it; 640x480 vs 640x360 do not


class TransformLookup(Protocol):
    """``T_target_source`` at ``stamp_ns``; raises ``geometry.tf_buffer.TransformError`` subtypes.

    :class:`~xmask3d_ros.geometry.tf_buffer.TfBuffer` satisfies it; the node wraps tf2_ros.
    """

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int) -> SE3: ...


def resize_nearest(image: npt.NDArray[Any], height: int, width: int) -> npt.NDArray[Any]:
    """(H, W, ...) -> (height, width, ...) by nearest neighbour at pixel centres (no new values)."""
    h, w = image.shape[:2]
    rows = np.minimum(((np.arange(height) + 0.5) * (h / height)).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (w / width)).astype(np.int64), w - 1)
    return np.ascontiguousarray(image[rows][:, cols])


def _same_aspect(w1: int, h1: int, w2: int, h2: int) -> bool:
    return abs(w1 * h2 - w2 * h1) <= _ASPECT_TOL * max(w1 * h2, w2 * h1)


def _is_compressed(msg: Any) -> bool:
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


class FrameAssembler:
    """Decode, synchronise and pose RGB-D frames; thread-safe (callbacks and a timer may interleave).

    ``stats`` counts every message and every drop by reason; ``last_error`` is the latest
    problem as text for throttled logs (None until one happens).
    """

    def __init__(self, cfg: PerceptionConfig, lookup: TransformLookup, *, rectified: bool = False) -> None:
        self.cfg = cfg
        self._lookup = lookup
        self._rectified = rectified
        self._sync = TimeSynchronizer(3, cfg.sync.queue_size, cfg.sync.slop_s, cfg.sync.mode)
        self._pending: collections.deque[RgbdFrame] = collections.deque()
        self._lock = threading.RLock()
        self._newest_ns: int | None = None
        self._counts: collections.Counter[str] = collections.Counter()
        self.last_error: str | None = None

    # -- inputs ---------------------------------------------------------------------------
    def _fail(self, key: str, text: str) -> None:
        self._counts[key] += 1
        self.last_error = text

    def _decode(self, stream: str, fn: Any, msg: Any) -> Any:
        try:
            return fn(msg)
        except DecodeError as err:
            self._fail(f"decode_error_{err.reason}", f"{stream}: {err}")
            return None

    def _depth(self, msg: Any) -> npt.NDArray[np.float32]:
        kw = {"min_depth_m": self.cfg.depth.min_depth_m, "max_depth_m": self.cfg.depth.max_depth_m}
        if _is_compressed(msg):
            return decode_compressed_depth(msg, **kw)
        return decode_depth(msg, **kw)

    def _rgb(self, msg: Any) -> npt.NDArray[np.uint8]:
        return decode_compressed_rgb(msg) if _is_compressed(msg) else decode_rgb(msg)

    def _camera(self, msg: Any) -> PinholeCamera:
        return camera_from_info(msg, rectified=self._rectified)

    def _add(self, stream: int, name: str, msg: Any, fn: Any) -> bool:
        with self._lock:
            self._counts[f"received_{name}"] += 1
            try:
                stamp = stamp_ns(msg.header)
            except DecodeError as err:
                self._fail(f"decode_error_{err.reason}", f"{name}: {err}")
                return False
            value = self._decode(name, fn, msg)
            if value is None:
                return False
            item = (value, str(msg.header.frame_id), stamp)
            queued = False
            for rgb, depth, info in self._sync.add(stream, stamp, item):
                queued |= self._assemble(rgb, depth, info)
            return queued

    def add_rgb(self, msg: Any) -> bool:
        """A colour ``Image`` or ``CompressedImage``; True when it completed a queued frame."""
        return self._add(_RGB, "rgb", msg, self._rgb)

    def add_depth(self, msg: Any) -> bool:
        """A depth ``Image`` or ``compressedDepth`` ``CompressedImage``."""
        return self._add(_DEPTH, "depth", msg, self._depth)

    def add_camera_info(self, msg: Any) -> bool:
        """A ``CameraInfo``."""
        return self._add(_INFO, "camera_info", msg, self._camera)

    def add_synced(self, rgb_msg: Any, depth_msg: Any, info_msg: Any) -> bool:
        """A set already matched (message_filters); True when it was queued for TF."""
        with self._lock:
            self._counts["received_synced"] += 1
            items = []
            for name, fn, msg in (("rgb", self._rgb, rgb_msg), ("depth", self._depth, depth_msg),
                                  ("camera_info", self._camera, info_msg)):
                try:
                    stamp = stamp_ns(msg.header)
                except DecodeError as err:
                    self._fail(f"decode_error_{err.reason}", f"{name}: {err}")
                    return False
                value = self._decode(name, fn, msg)
                if value is None:
                    return False
                items.append((value, str(msg.header.frame_id), stamp))
            return self._assemble(*items)

    # -- assembly -------------------------------------------------------------------------
    def _assemble(self, rgb_item: Any, depth_item: Any, info_item: Any) -> bool:
        rgb, frame_id, stamp = rgb_item
        depth = depth_item[0]
        camera: PinholeCamera = info_item[0]
        h, w = rgb.shape[:2]
        if depth.shape != (h, w):
            dh, dw = depth.shape
            if not _same_aspect(dw, dh, w, h):
                self._fail("rejected_size_mismatch",
                           f"depth is {dw}x{dh} but colour is {w}x{h} (different aspect ratios)")
                return False
            depth = resize_nearest(depth, h, w)
            self._counts["depth_resized"] += 1
        if (camera.width, camera.height) != (w, h):
            if not _same_aspect(camera.width, camera.height, w, h):
                self._fail("rejected_camera_info_size",
                           f"camera_info is {camera.width}x{camera.height} but colour is {w}x{h}")
                return False
            camera = camera.scaled(w, h)
        if stamp == 0:
            self._fail("rejected_zero_stamp", "image stamp is 0: cannot look up TF at the image time")
            return False
        if not frame_id:
            self._fail("rejected_empty_frame_id", "image header.frame_id is empty")
            return False
        frame = RgbdFrame(rgb=rgb, depth_m=depth, camera=camera, stamp_ns=stamp, frame_id=frame_id)
        self._counts["synced"] += 1
        self._newest_ns = stamp if self._newest_ns is None else max(self._newest_ns, stamp)
        self._pending.append(frame)
        while len(self._pending) > self.cfg.node.tf_wait_queue_size:
            old = self._pending.popleft()
            self._fail("tf_queue_overflow",
                       f"TF wait queue full: dropped the frame at {old.stamp_ns / 1e9:.3f} s")
        return True

    def poll(self, now_ns: int | None = None) -> list[PosedFrame]:
        """Frames whose pose is now known, oldest first; drops stale ones (see module docstring)."""
        with self._lock:
            ref = self._newest_ns
            if now_ns is not None:
                ref = int(now_ns) if ref is None else max(ref, int(now_ns))
            max_age_ns = int(round(self.cfg.node.tf_wait_max_age_s * 1e9))
            target = self.cfg.node.map_frame
            out: list[PosedFrame] = []
            keep: collections.deque[RgbdFrame] = collections.deque()
            for frame in self._pending:
                try:
                    T = self._lookup.lookup(target, frame.frame_id, frame.stamp_ns)
                except PastExtrapolationError as err:
                    self._fail("tf_dropped_past", f"{frame.frame_id} at {frame.stamp_ns / 1e9:.3f} s: {err}")
                    continue
                except TransformError as err:  # future extrapolation, unknown frame, not connected
                    if ref is not None and ref - frame.stamp_ns > max_age_ns:
                        self._fail("tf_dropped_age",
                                   f"no TF {target} <- {frame.frame_id} at {frame.stamp_ns / 1e9:.3f} s "
                                   f"after {self.cfg.node.tf_wait_max_age_s:g} s: {err}")
                    else:
                        keep.append(frame)
                    continue
                self._counts["posed"] += 1
                out.append(PosedFrame(frame=frame, T_map_cam=T))
            self._pending = keep
            return out

    def pending(self) -> int:
        """Frames waiting for their TF."""
        with self._lock:
            return len(self._pending)

    def reset(self) -> None:
        """Forget queued messages and frames (time jumped backwards, e.g. a bag loop); keeps stats."""
        with self._lock:
            self._sync.reset()
            self._counts["tf_dropped_reset"] += len(self._pending)
            self._pending.clear()
            self._newest_ns = None
            self._counts["resets"] += 1

    @property
    def stats(self) -> dict[str, int]:
        """Counters by reason, including the synchroniser's drops as ``sync_<reason>``."""
        with self._lock:
            out = dict(self._counts)
            s = self._sync.stats.as_dict()
            for key in ("queue_overflow", "older_than_last_emitted", "duplicate_stamp", "out_of_slop",
                        "dropped"):
                out[f"sync_{key}"] = s[key]
            out["tf_waiting"] = len(self._pending)
            return out
