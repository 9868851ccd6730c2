"""Open a rosbag2 (MCAP or sqlite3) with rosbags and pick its camera and TF topics (no rclpy).

:func:`open_bag` returns a :class:`BagSource`: the chosen topics (:class:`BagTopics`, found by
message type when not named, with a line saying which were chosen) and a log-time ordered message
iterator. Every problem is a :class:`BagError` with a short ``reason`` and a message naming it:
missing path, unreadable/truncated file, corrupt chunk, no colour / depth / camera_info / TF topic.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

__all__ = ["BagError", "BagMessage", "BagSource", "BagTopics", "open_bag", "select_topics"]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
INFO = "sensor_msgs/msg/CameraInfo"
TF = "tf2_msgs/msg/TFMessage"


class BagError(RuntimeError):
    """The bag cannot be replayed; ``reason`` is a short key (e.g. 'no_depth', 'corrupt')."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class BagTopics:
    """Topics the replay reads (``tf``/``tf_static`` may be empty when the bag lacks them)."""

    rgb: str  # sensor_msgs/Image or CompressedImage, colour
    depth: str  # sensor_msgs/Image (16UC1/32FC1) or compressedDepth CompressedImage
    camera_info: str  # sensor_msgs/CameraInfo of the colour camera
    tf: tuple[str, ...]  # tf2_msgs/TFMessage topics with dynamic transforms
    tf_static: tuple[str, ...]  # tf2_msgs/TFMessage topics with static transforms

    def describe(self) -> str:
        return (f"rgb={self.rgb} depth={self.depth} camera_info={self.camera_info} "
                f"tf={','.join(self.tf) or '-'} tf_static={','.join(self.tf_static) or '-'}")


@dataclasses.dataclass(frozen=True)
class BagMessage:
    """One deserialised message with its role ('rgb', 'depth', 'camera_info', 'tf', 'tf_static').

    TF messages of a rosbag2 also keep their serialised CDR bytes (``raw``) and type, so they can
    be copied unchanged into an output bag; ``raw`` is None for the other roles.
    """

    role: str
    topic: str
    log_time_ns: int
    msg: Any
    msgtype: str = ""
    raw: bytes | None = None


def _is_depth_name(topic: str) -> bool:
    t = topic.lower()  # 'aligned_color_to_depth' is colour registered to depth, not depth
    return "depth" in t and "color_to_depth" not in t and "rgb_to_depth" not in t


def _common_prefix(a: str, b: str) -> int:
    pa, pb = a.strip("/").split("/"), b.strip("/").split("/")
    n = 0
    for x, y in zip(pa, pb):
        if x != y:
            break
        n += 1
    return n


def select_topics(types: dict[str, str], *, rgb: str | None = None, depth: str | None = None,
                  camera_info: str | None = None) -> tuple[BagTopics, list[str]]:
    """Pick the topics from ``{topic: msgtype}``; returns them and notes on what was chosen."""
    notes: list[str] = []
    images = sorted(t for t, ty in types.items() if ty in (IMAGE, COMPRESSED))

    def check(name: str, topic: str | None, allowed: Sequence[str]) -> str | None:
        if topic is not None and types.get(topic) not in allowed:
            got = types.get(topic, "absent")
            raise BagError(f"bad_{name}_topic", f"--{name} topic {topic} is {got}, expected {' or '.join(allowed)}")
        return topic

    rgb, depth = check("rgb", rgb, (IMAGE, COMPRESSED)), check("depth", depth, (IMAGE, COMPRESSED))
    camera_info = check("camera_info", camera_info, (INFO,))
    if depth is None:
        cands = [t for t in images if _is_depth_name(t) and t != rgb]
        if not cands:
            raise BagError("no_depth", f"no depth image topic (an Image/CompressedImage topic with 'depth' "
                                       f"in its name) among {images or 'no image topics'}")
        depth = min(cands, key=lambda t: (types[t] != IMAGE, "aligned" not in t, len(t)))
        notes.append(f"depth: chose {depth} ({types[depth]}) of {cands}")
    if rgb is None:
        cands = [t for t in images if not _is_depth_name(t)]
        if not cands:
            raise BagError("no_rgb", f"no colour image topic among {images or 'no image topics'}")
        rgb = min(cands, key=lambda t: (types[t] != IMAGE, "rect" in t, len(t)))
        notes.append(f"rgb: chose {rgb} ({types[rgb]}) of {cands}")
    if camera_info is None:
        cands = sorted(t for t, ty in types.items() if ty == INFO)
        if not cands:
            raise BagError("no_camera_info", "no sensor_msgs/CameraInfo topic in the bag")
        camera_info = max(cands, key=lambda t: (_common_prefix(t, rgb), -len(t)))
        notes.append(f"camera_info: chose {camera_info} of {cands}")
    tfs = sorted(t for t, ty in types.items() if ty == TF)
    static = tuple(t for t in tfs if "static" in t)
    dynamic = tuple(t for t in tfs if "static" not in t)
    if not tfs:
        raise BagError("no_tf", "no tf2_msgs/TFMessage topic (/tf, /tf_static): frames cannot be posed")
    return BagTopics(rgb, depth, camera_info, dynamic, static), notes


_ROSBAGS_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, KeyError, EOFError, IndexError, ArithmeticError, struct.error, sqlite3.Error,
    MemoryError,
)
try:  # rosbags' own error classes (names differ between versions)
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag2 import ReaderError

    _ROSBAGS_ERRORS += (AnyReaderError, ReaderError)
except ImportError:  # pragma: no cover
    pass


def _explain(path: Path, err: BaseException, during: str) -> BagError:
    text = f"{type(err).__name__}: {err}"
    low = text.lower()
    if any(k in low for k in ("truncat", "eof", "end of", "unexpected end", "short read")):
        reason = "truncated"
    elif any(k in low for k in ("crc", "chunk", "decompress", "corrupt", "malformed", "invalid")):
        reason = "corrupt"
    else:
        reason = "unreadable"
    what = {"truncated": "is truncated", "corrupt": "has a corrupt chunk or record",
            "unreadable": "cannot be read"}[reason]
    return BagError(reason, f"bag {path} {what} ({during}): {text}")


class BagSource:
    """An open bag: ``topics``, ``notes`` (choices made) and :meth:`messages` in log-time order."""

    def __init__(self, path: str | Path, *, rgb: str | None = None, depth: str | None = None,
                 camera_info: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagError("missing", f"bag {self.path} does not exist")
        self._reader = AnyReader([self.path], default_typestore=get_typestore(Stores.ROS2_JAZZY))
        try:
            self._reader.open()
        except _ROSBAGS_ERRORS as err:
            raise _explain(self.path, err, "opening") from err
        try:
            types = {c.topic: c.msgtype for c in self._reader.connections}
            self.topics, self.notes = select_topics(types, rgb=rgb, depth=depth, camera_info=camera_info)
        except BagError:
            self._reader.close()
            raise
        roles = {self.topics.rgb: "rgb", self.topics.depth: "depth", self.topics.camera_info: "camera_info"}
        roles.update({t: "tf" for t in self.topics.tf})
        roles.update({t: "tf_static" for t in self.topics.tf_static})
        self._roles = roles
        self._keep_raw = bool(getattr(self._reader, "is2", True))  # CDR bytes (rosbag2) copy as-is
        self._qos = {c.topic: list(getattr(c.ext, "offered_qos_profiles", None) or [])
                     for c in self._reader.connections if c.topic in roles}
        self.start_ns, self.end_ns = int(self._reader.start_time), int(self._reader.end_time)

    def messages(self, start_ns: int | None = None, stop_ns: int | None = None) -> Iterator[BagMessage]:
        """Messages of the chosen topics in log-time order (``tf_static`` always from the start)."""
        conns = [c for c in self._reader.connections if c.topic in self._roles]
        it = self._reader.messages(connections=conns)
        try:
            for conn, t, raw in it:
                role = self._roles[conn.topic]
                if role != "tf_static" and start_ns is not None and t < start_ns:
                    continue
                if stop_ns is not None and t >= stop_ns:
                    if role != "tf_static":
                        break
                    continue
                try:
                    msg = self._reader.deserialize(raw, conn.msgtype)
                except Exception as err:  # noqa: BLE001 - any CDR failure is a corrupt record
                    raise BagError("corrupt", f"bag {self.path}: message on {conn.topic} at "
                                              f"{t / 1e9:.3f} s does not deserialise: {err}") from err
                keep = self._keep_raw and role in ("tf", "tf_static")
                yield BagMessage(role, conn.topic, int(t), msg, conn.msgtype, bytes(raw) if keep else None)
        except _ROSBAGS_ERRORS as err:
            raise _explain(self.path, err, "reading messages") from err

    def offered_qos(self, topic: str) -> list[Any]:
        """The QoS profiles the recorder saw offered on ``topic`` (rosbags ``Qos``; may be empty)."""
        qos = self._qos.get(topic, [])
        return [q for q in qos if not isinstance(q, str)] if isinstance(qos, list) else []

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> BagSource:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_bag(path: str | Path, *, rgb: str | None = None, depth: str | None = None,
             camera_info: str | None = None) -> BagSource:
    """Open ``path`` (a rosbag2 directory, or an .mcap / .db3 file's directory); see :class:`BagSource`."""
    return BagSource(path, rgb=rgb, depth=depth, camera_info=camera_info)
