"""pipeline/decode.py: message fields -> arrays, with hand-built and rosbags messages."""

from __future__ import annotations

import array
import io
import struct
from types import SimpleNamespace as NS
from typing import Any

import numpy as np
import pytest
from PIL import Image
from rosbags.typesys import Stores, get_typestore

from xmask3d_ros.geometry.tf_buffer import TfBuffer
from xmask3d_ros.pipeline.decode import (
    DecodeError,
    camera_from_info,
    decode_compressed_depth,
    decode_compressed_rgb,
    decode_depth,
    decode_rgb,
    stamp_ns,
    transforms_from_tf,
)
from xmask3d_ros.replay.messages import camera_info_msg, image_msg, tf_message, transform_stamped_msg

TS = get_typestore(Stores.ROS2_JAZZY)
RANGE = {"min_depth_m": 0.1, "max_depth_m": 10.0}


def _header(ns: int = 1_500_000_001, frame: str = "cam") -> NS:
    return NS(stamp=NS(sec=ns // 10**9, nanosec=ns % 10**9), frame_id=frame)


def _img(arr: np.ndarray, encoding: str, *, pad: int = 0, big: bool = False, kind: str = "bytes") -> NS:
    h, w = arr.shape[:2]
    a = arr.astype(arr.dtype.newbyteorder(">" if big else "<"))
    rows = a.reshape(h, -1).view(np.uint8).reshape(h, -1)
    rows = np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    raw = rows.tobytes()
    data: Any = {"bytes": raw, "array": array.array("B", raw), "list": list(raw),
                 "numpy": np.frombuffer(raw, np.uint8)}[kind]
    return NS(header=_header(), height=h, width=w, encoding=encoding, is_bigendian=int(big),
              step=rows.shape[1], data=data)


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)


def test_stamp_ns() -> None:
    assert stamp_ns(_header(12_345_678_901)) == 12_345_678_901
    assert stamp_ns(_header(7).stamp) == 7
    with pytest.raises(DecodeError) as e:
        stamp_ns(NS(stamp=NS(sec=1, nanosec=2_000_000_000)))
    assert e.value.reason == "bad_stamp"


@pytest.mark.parametrize("kind", ["bytes", "array", "list", "numpy"])
@pytest.mark.parametrize("pad", [0, 3])
def test_decode_rgb_encodings(rgb: np.ndarray, kind: str, pad: int) -> None:
    alpha = np.full(rgb.shape[:2] + (1,), 9, np.uint8)
    cases = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "rgba8": np.concatenate([rgb, alpha], -1),
             "bgra8": np.concatenate([rgb[..., ::-1], alpha], -1)}
    for enc, arr in cases.items():
        out = decode_rgb(_img(np.ascontiguousarray(arr), enc, pad=pad, kind=kind))
        assert out.dtype == np.uint8 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, rgb, err_msg=enc)
    mono = decode_rgb(_img(rgb[..., 0].copy(), "mono8", pad=pad, kind=kind))
    np.testing.assert_array_equal(mono, np.repeat(rgb[..., :1], 3, axis=2))


def test_decode_rgb_errors(rgb: np.ndarray) -> None:
    msg = _img(rgb, "rgb8")
    cases = {
        "unknown_encoding": NS(**{**vars(msg), "encoding": "yuv422"}),
        "truncated_data": NS(**{**vars(msg), "data": msg.data[:-1]}),
        "bad_step": NS(**{**vars(msg), "step": 7 * 3 - 1}),
        "empty_image": NS(**{**vars(msg), "height": 0}),
    }
    for reason, bad in cases.items():
        with pytest.raises(DecodeError) as e:
            decode_rgb(bad)
        assert e.value.reason == reason and isinstance(e.value, ValueError)


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("pad", [0, 2])
def test_decode_depth(big: bool, pad: int) -> None:
    mm = np.array([[0, 50, 1000], [2500, 12000, 65535]], np.uint16)
    expect = np.array([[0, 0, 1.0], [2.5, 0, 0]], np.float32)
    for enc in ("16UC1", "mono16"):
        out = decode_depth(_img(mm, enc, pad=pad, big=big), **RANGE)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expect, rtol=1e-6)
    m = np.array([[np.nan, 0.05, 1.0], [2.5, np.inf, -1.0]], np.float32)
    np.testing.assert_allclose(decode_depth(_img(m, "32FC1", pad=pad, big=big), **RANGE), expect)
    with pytest.raises(DecodeError) as e:
        decode_depth(_img(mm.astype(np.uint8), "8UC1"), **RANGE)
    assert e.value.reason == "unknown_encoding"


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_compressed_rgb(rgb: np.ndarray) -> None:
    out = decode_compressed_rgb(NS(header=_header(), format="png", data=_png(rgb)))
    np.testing.assert_array_equal(out, rgb)
    smooth = np.zeros((32, 48, 3), np.uint8)
    smooth[..., 0], smooth[..., 2] = 200, 40
    buf = io.BytesIO()
    Image.fromarray(smooth).save(buf, format="JPEG", quality=95)
    out = decode_compressed_rgb(NS(header=_header(), format="rgb8; jpeg compressed bgr8",
                                   data=np.frombuffer(buf.getvalue(), np.uint8)))
    assert out.shape == (32, 48, 3) and np.abs(out.astype(int) - smooth).max() <= 3
    for reason, data, fmt in (("corrupt_compressed", b"\x89PNG garbage", "png"),
                              ("unknown_format", _png(rgb), "16UC1; compressedDepth")):
        with pytest.raises(DecodeError) as e:
            decode_compressed_rgb(NS(header=_header(), format=fmt, data=data))
        assert e.value.reason == reason


def test_decode_compressed_depth_16uc1() -> None:
    mm = np.array([[0, 1000, 2345], [9999, 50, 777]], np.uint16)
    data = struct.pack("<iff", 0, 0.0, 0.0) + _png(mm)
    out = decode_compressed_depth(NS(header=_header(), format="16UC1; compressedDepth", data=data),
                                  **RANGE)
    np.testing.assert_allclose(out, np.array([[0, 1.0, 2.345], [9.999, 0, 0.777]], np.float32),
                               rtol=1e-6)


def test_decode_compressed_depth_32fc1_inverse_quantisation() -> None:
    # image_transport's publisher: q = a / depth + b with b = -a / depth_max + 0.5; 0 = invalid.
    a, depth_max = 100.0, 10.0
    b = -a / depth_max + 0.5
    depth = np.array([[0.0, 0.5, 1.0], [2.0, 4.0, 8.0]], np.float32)
    with np.errstate(divide="ignore"):
        q = np.where(depth > 0, np.rint(a / depth + b), 0).astype(np.uint16)
    data = struct.pack("<iff", 0, a, b) + _png(q)
    out = decode_compressed_depth(NS(header=_header(), format="32FC1; compressedDepth png",
                                     data=data), **RANGE)
    assert out[0, 0] == 0
    # quantisation error of inverse depth grows with depth^2 / a
    np.testing.assert_allclose(out[depth > 0], depth[depth > 0], rtol=0.1)
    assert np.all(np.abs(out - depth) <= depth**2 / a + 1e-6)


def test_decode_compressed_depth_errors() -> None:
    png = _png(np.zeros((2, 2), np.uint16))
    cases = {
        "unknown_format": ("png", struct.pack("<iff", 0, 0, 0) + png),
        "unsupported_compression": ("16UC1; compressedDepth rvl", b"x" * 20),
        "unknown_encoding": ("8UC1; compressedDepth", struct.pack("<iff", 0, 0, 0) + png),
        "truncated_data": ("16UC1; compressedDepth", b"\0" * 12),
        "corrupt_compressed": ("16UC1; compressedDepth", struct.pack("<iff", 0, 0, 0) + png[:20]),
    }
    for reason, (fmt, data) in cases.items():
        with pytest.raises(DecodeError) as e:
            decode_compressed_depth(NS(header=_header(), format=fmt, data=data), **RANGE)
        assert e.value.reason == reason, (reason, str(e.value))


def _info(**kw: Any) -> NS:
    base = dict(header=_header(), width=640, height=480, distortion_model="plumb_bob",
                d=[0.0] * 5, k=[500.0, 0, 319.5, 0, 510.0, 239.5, 0, 0, 1],
                p=[500.0, 0, 319.5, 0, 0, 510.0, 239.5, 0, 0, 0, 1, 0])
    return NS(**{**base, **kw})


def test_camera_from_info() -> None:
    cam = camera_from_info(_info())
    assert (cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height) == (500, 510, 319.5, 239.5, 640, 480)
    cam = camera_from_info(_info(d=[0.1, 0, 0, 0, 0], p=[400.0, 0, 300, 0, 0, 400, 200, 0, 0, 0, 1, 0]),
                           rectified=True)
    assert (cam.fx, cam.cx, cam.distortion) == (400, 300, ())
    cases = {
        "nonzero_distortion": _info(d=[0.1, 0, 0, 0, 0]),
        "uncalibrated": _info(k=[0.0] * 9),
        "invalid_k": _info(k=[500.0, 1, 319.5, 0, 510.0, 239.5, 0, 0, 1]),
        "bad_camera_info": _info(width=0),
    }
    for reason, msg in cases.items():
        with pytest.raises(DecodeError) as e:
            camera_from_info(msg)
        assert e.value.reason == reason
    with pytest.raises(DecodeError) as e:
        camera_from_info(_info(k=[-500.0, 0, 319.5, 0, 510.0, 239.5, 0, 0, 1]))
    assert e.value.reason == "invalid_k"


def test_rosbags_messages_roundtrip(rgb: np.ndarray) -> None:
    """Messages built and CDR-serialised by rosbags decode to the arrays they were built from."""
    def rt(msg: Any, typ: str) -> Any:
        return TS.deserialize_cdr(TS.serialize_cdr(msg, typ), typ)

    stamp = 1_700_000_000_123_456_789
    m = rt(image_msg(TS, rgb, stamp, "cam", "rgb8"), "sensor_msgs/msg/Image")
    assert stamp_ns(m.header) == stamp
    np.testing.assert_array_equal(decode_rgb(m), rgb)
    mm = np.array([[0, 1000], [2000, 3000]], np.uint16)
    d = rt(image_msg(TS, mm, stamp, "cam", "16UC1"), "sensor_msgs/msg/Image")
    np.testing.assert_allclose(decode_depth(d, **RANGE), [[0, 1], [2, 3]])
    K = np.array([[50.0, 0, 3.5], [0, 50.0, 2.5], [0, 0, 1]])
    info = rt(camera_info_msg(TS, K, 7, 5, stamp, "cam"), "sensor_msgs/msg/CameraInfo")
    cam = camera_from_info(info)
    assert (cam.fx, cam.cx, cam.cy, cam.width, cam.height) == (50, 3.5, 2.5, 7, 5)
    T = np.eye(4)
    T[:3, 3] = [1, 2, 3]
    tf = rt(tf_message(TS, [transform_stamped_msg(TS, T, "odom", "base", stamp)]), "tf2_msgs/msg/TFMessage")
    (rec,) = transforms_from_tf(tf)
    assert (rec.parent_frame, rec.child_frame, rec.stamp_ns) == ("odom", "base", stamp)
    buf = TfBuffer()
    buf.set_transform(rec)
    np.testing.assert_allclose(buf.lookup("odom", "base", stamp).translation, [1, 2, 3])
    c = rt(TS.types["sensor_msgs/msg/CompressedImage"](header=m.header, format="png",
                                                       data=np.frombuffer(_png(rgb), np.uint8)),
           "sensor_msgs/msg/CompressedImage")
    np.testing.assert_array_equal(decode_compressed_rgb(c), rgb)
