"""Configuration of the synthetic-room generator (``xmask3d-synth``, tests, the demo).

Every field is documented and range-checked by :mod:`xmask3d_ros.config.schema`; ``(min, max)``
pairs are checked for order in ``__post_init__``. Units are in the field names.
"""

from __future__ import annotations

from dataclasses import dataclass

from xmask3d_ros.config.schema import ConfigError, param, section

__all__ = [
    "ROOM_TYPES",
    "BagCfg",
    "CameraCfg",
    "GroundTruthCfg",
    "RoomCfg",
    "ScanNetExportCfg",
    "SyntheticCfg",
    "TrajectoryCfg",
]

# Room types known to the layout generator; each has its own furniture mix (data/synthetic/layout.py).
ROOM_TYPES = ("bedroom", "living_room", "office", "kitchen", "bathroom")


def _check_pair(name: str, pair: tuple[float, float]) -> None:
    if pair[0] > pair[1]:
        raise ConfigError(f"{name}: min {pair[0]} is larger than max {pair[1]}")


@dataclass(frozen=True)
class RoomCfg:
    """Procedural room shell and furniture placement."""

    size_x_m: tuple[float, float] = param(
        (3.5, 6.5), "room extent along world x, drawn uniformly from [min, max] (m)", ge=2.5, le=30
    )
    size_y_m: tuple[float, float] = param(
        (3.0, 5.5), "room extent along world y, drawn uniformly from [min, max] (m)", ge=2.5, le=30
    )
    height_m: tuple[float, float] = param(
        (2.5, 3.0), "floor-to-ceiling height, drawn uniformly (m); doors are 2.0-2.1 m", ge=2.3, le=10
    )
    furniture_count: tuple[int, int] = param(
        (5, 15), "furniture items per room (walls, door, window not counted)", ge=1, le=40
    )
    room_types: tuple[str, ...] = param(
        ROOM_TYPES, "room types drawn uniformly; each has its own furniture mix"
    )
    placement_attempts: int = param(
        60, "random placements tried per item before it is given up", ge=1, le=10000
    )

    def __post_init__(self) -> None:
        _check_pair("size_x_m", self.size_x_m)
        _check_pair("size_y_m", self.size_y_m)
        _check_pair("height_m", self.height_m)
        _check_pair("furniture_count", self.furniture_count)
        if not self.room_types:
            raise ConfigError("room_types: empty, expected some of " + ", ".join(ROOM_TYPES))
        for kind in self.room_types:
            if kind not in ROOM_TYPES:
                raise ConfigError(
                    f"room_types: {kind!r} is unknown, expected some of {', '.join(ROOM_TYPES)}"
                )


@dataclass(frozen=True)
class CameraCfg:
    """Pinhole RGB-D camera (colour and depth share one optical frame, as aligned depth does)."""

    width: int = param(640, "image width (px)", ge=8, le=8192)
    height: int = param(480, "image height (px)", ge=8, le=8192)
    focal_px_at_640: float = param(
        577.870605,
        "focal length in px for a 640 px wide image (ScanNet's fixed depth intrinsics); "
        "scaled with the width, principal point at the image centre",
        gt=0,
    )
    fps: float = param(
        10.0, "frame rate: sets stamps and the path length between frames (Hz)", gt=0, le=240
    )
    near_m: float = param(0.05, "surfaces closer than this are not rendered (m)", gt=0, le=1)


@dataclass(frozen=True)
class TrajectoryCfg:
    """Handheld-like camera path: a wobbly loop around the room looking across it at the furniture."""

    speed_mps: float = param(0.35, "walking speed along the loop (m/s)", gt=0, le=5)
    height_m: tuple[float, float] = param(
        (1.3, 1.7), "camera height, drawn per room (m); above tables and chair backs", gt=0.2, le=5
    )
    look_height_m: tuple[float, float] = param(
        (0.5, 1.0), "height of the looked-at points near the walls, varying slowly (m)", ge=0, le=5
    )
    look_sweep_deg: tuple[float, float] = param(
        (20.0, 50.0), "amplitude of the slow left/right sweep around the across-room direction (deg)",
        ge=0, le=90,
    )
    jitter_pos_m: float = param(0.01, "amplitude of smooth hand-shake in position (m)", ge=0, le=0.2)
    jitter_rot_deg: float = param(0.8, "amplitude of smooth hand-shake in rotation (deg)", ge=0, le=10)
    clearance_m: float = param(
        0.3, "minimum distance from the camera centre to any surface (m)", gt=0, le=2
    )

    def __post_init__(self) -> None:
        _check_pair("height_m", self.height_m)
        _check_pair("look_height_m", self.look_height_m)
        _check_pair("look_sweep_deg", self.look_sweep_deg)


@dataclass(frozen=True)
class GroundTruthCfg:
    """Labelled surface samples (the scene 'mesh vertices' of the ScanNet 3D file and bag GT)."""

    point_spacing_m: float = param(
        0.03, "spacing of the surface samples (m); 0.03 gives ~100k-200k points per room",
        ge=0.003, le=0.5,
    )


@dataclass(frozen=True)
class BagCfg:
    """rosbag2 output: topics, frames and the static camera mount (RealSense-like names)."""

    storage: str = param("mcap", "rosbag2 storage plugin", choices=("mcap", "sqlite3"))
    start_time_ns: int = param(
        1_700_000_000_000_000_000, "header stamp of the first frame (ns since the epoch)", ge=0
    )
    color_topic: str = param("/camera/color/image_raw", "rgb8 image topic")
    depth_topic: str = param(
        "/camera/aligned_depth_to_color/image_raw", "16UC1 depth (mm) topic, aligned to colour"
    )
    info_topic: str = param("/camera/color/camera_info", "CameraInfo topic of the colour camera")
    map_frame: str = param("odom", "fixed frame of the room (the world frame of the generator)")
    base_frame: str = param("base_link", "moving body frame, child of map_frame on /tf")
    camera_frame: str = param("camera_link", "camera body frame (x forward, z up), on /tf_static")
    optical_frame: str = param(
        "camera_color_optical_frame", "optical frame of the images (z forward, x right, y down)"
    )
    base_to_camera_xyz_m: tuple[float, float, float] = param(
        (0.1, 0.0, 1.0), "translation of camera_frame in base_frame (m)"
    )
    camera_to_optical_xyz_m: tuple[float, float, float] = param(
        (0.0, 0.015, 0.0), "translation of optical_frame in camera_frame (m; RealSense colour offset)"
    )


@dataclass(frozen=True)
class ScanNetExportCfg:
    """The ScanNet on-disk layout (OpenScene preprocessing) written for the synthetic scenes."""

    split: str = param("train", "split folder of scannet_3d/<split>/", choices=("train", "val", "test", "tune"))
    jpeg_quality: int = param(95, "JPEG quality of color/<i>.jpg", ge=1, le=100)


@dataclass(frozen=True)
class SyntheticCfg:
    """Everything the synthetic-room generator and its writers can be tuned by."""

    room: RoomCfg = section(RoomCfg, "room shell and furniture")
    camera: CameraCfg = section(CameraCfg, "RGB-D camera")
    trajectory: TrajectoryCfg = section(TrajectoryCfg, "camera path")
    ground_truth: GroundTruthCfg = section(GroundTruthCfg, "labelled surface samples")
    bag: BagCfg = section(BagCfg, "rosbag2 output")
    scannet: ScanNetExportCfg = section(ScanNetExportCfg, "ScanNet-layout output")
