"""Shared scene of the pipeline tests: a synthetic room rendered along its camera loop.

Exposed as fixtures because the test folders are not packages (pytest importlib mode).

The map frame is the room frame shifted by a few centimetres (``MAP_OFFSET_M``): the synthetic
room's floor and walls lie exactly on multiples of 5 cm, where ``floor(p / s)`` of a depth point
flips between two voxel layers on float noise; real maps are never aligned like that.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from xmask3d_ros.config.perception import PerceptionConfig
from xmask3d_ros.config.schema import from_dict, merge, to_dict
from xmask3d_ros.data.classes import SYNTHETIC_CLASSES, SYNTHETIC_RAW_IDS
from xmask3d_ros.data.synthetic import SurfacePoints, generate_room
from xmask3d_ros.geometry.camera import PinholeCamera
from xmask3d_ros.geometry.frame import PosedFrame, RgbdFrame
from xmask3d_ros.geometry.transforms import SE3
from xmask3d_ros.pipeline import GroundTruthSegmenter, TableTextEncoder

MAP_OFFSET_M = np.array([0.0123, 0.0237, 0.0311])
CLASS_NAMES: dict[int, str] = dict(zip(SYNTHETIC_RAW_IDS, SYNTHETIC_CLASSES))


@dataclasses.dataclass(frozen=True, eq=False)
class Scene:
    frames: tuple[PosedFrame, ...]
    labels: dict[int, npt.NDArray[np.uint16]]  # stamp_ns -> (H, W) raw class ids
    gt: SurfacePoints  # ground-truth surface samples, room frame
    gt_points_map: npt.NDArray[np.float32]  # the same points in the map frame
    present: tuple[str, ...]  # class names of the ground truth, vocabulary order

    def label_image(self, posed: PosedFrame) -> npt.NDArray[np.uint16]:
        return self.labels[posed.stamp_ns]

    def encoder(self, dim: int = 512) -> TableTextEncoder:
        return TableTextEncoder(SYNTHETIC_CLASSES, dim, seed=1)

    def segmenter(self, encoder: TableTextEncoder, **kw: Any) -> GroundTruthSegmenter:
        return GroundTruthSegmenter(encoder, CLASS_NAMES, self.label_image, **kw)


def render_scene(seed: int, n_frames: int, width: int, height: int) -> Scene:
    room = generate_room(seed)
    K = room.intrinsics(width, height)
    cam = PinholeCamera(K[0, 0], K[1, 1], K[0, 2], K[1, 2], width, height)
    times = np.linspace(0.0, room.trajectory.loop_period_s(), n_frames, endpoint=False)
    frames, labels = [], {}
    for t, T in zip(times, room.trajectory.poses(times)):
        f = room.render(T, K, width, height)
        stamp = 1_000_000_000 + int(round(t * 1e9))
        T_map = T.copy()
        T_map[:3, 3] += MAP_OFFSET_M
        frames.append(PosedFrame(RgbdFrame(f.rgb, f.depth_m, cam, stamp, "camera_optical"),
                                 SE3.from_matrix(T_map)))
        labels[stamp] = f.label
    gt = room.sample_surface_points(0.01)
    present = tuple(CLASS_NAMES[int(i)] for i in np.unique(gt.label) if int(i) in CLASS_NAMES)
    return Scene(tuple(frames), labels, gt, (gt.points + MAP_OFFSET_M).astype(np.float32), present)


@pytest.fixture(scope="session")
def living_room() -> Scene:
    """A living room (seed 4: sofa, chairs, plants, lamps, pillows...), 48 frames at 320x240."""
    return render_scene(4, 48, 320, 240)


@pytest.fixture(scope="session")
def small_frames() -> Scene:
    """Cheap 160x120 frames of another room, for the threading tests."""
    return render_scene(2, 40, 160, 120)


@pytest.fixture(scope="session")
def make_cfg() -> Callable[..., PerceptionConfig]:
    """PerceptionConfig from nested overrides, e.g. make_cfg(pipeline={'mode': 'sync'})."""

    def make(**sections: Any) -> PerceptionConfig:
        return from_dict(PerceptionConfig, merge(to_dict(PerceptionConfig()), sections))

    return make
