"""ScanNet on-disk layouts as preprocessed by OpenScene and read by XMask3D: writer + reader.

3D (reference-notes §2.1): ``<root>/scannet_3d/<split>/<scene>_vh_clean_2.pth``, a torch-saved
3-tuple ``(coords (N, 3) float, colors (N, 3) in [-1, 1], labels (N,))`` with labels already
mapped to ScanNet-20 indices 0..19 / 255. Real files hold numpy arrays; this writer stores
tensors. The reader accepts both without unpickling arbitrary objects (``weights_only=True``
with only numpy's array-reconstruction globals allowed).

2D (reference-notes §2.2): ``<root>/scannet_2d/<scene>/color/<i>.jpg``, ``depth/<i>.png``
(uint16 mm), ``pose/<i>.txt`` (4x4 camera-to-world), ``label/<i>.png`` (NYU40 ids), and a 4x4
``intrinsics.txt``. Intrinsics are looked up per scene, most specific first: the raw SensReader
export ``<scene>/intrinsic/intrinsic_{color,depth}.txt``, then ``<scene>/intrinsics.txt``, then
the global ``<root>/scannet_2d/intrinsics.txt``. A single matrix describes the colour image;
when the depth image has another size (raw exports: 1296x968 colour, 640x480 depth) the depth
intrinsics are the colour ones rescaled (pixel-centre exact). Frames whose pose holds -inf/NaN
(present in real ScanNet) or that miss a depth/pose file are skipped and counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

__all__ = [
    "ScanNet2DScene",
    "ScanNetFormatError",
    "ScanNetFrame",
    "list_scannet_scenes",
    "read_matrix",
    "read_scannet_2d_scene",
    "read_scannet_3d",
    "scale_intrinsics",
    "scene_2d_dir",
    "scene_3d_path",
    "write_intrinsics",
    "write_scannet_2d_frame",
    "write_scannet_3d",
]

F64 = npt.NDArray[np.float64]
DEPTH_SCALE = 1000.0  # depth PNG units per metre (ScanNet: millimetres)


class ScanNetFormatError(ValueError):
    """A file of the ScanNet layout is missing, unreadable or has the wrong content."""


def scene_3d_path(root: str | Path, split: str, scene: str) -> Path:
    """``<root>/scannet_3d/<split>/<scene>_vh_clean_2.pth``."""
    return Path(root) / "scannet_3d" / split / f"{scene}_vh_clean_2.pth"


def scene_2d_dir(root: str | Path, scene: str) -> Path:
    """``<root>/scannet_2d/<scene>``."""
    return Path(root) / "scannet_2d" / scene


def list_scannet_scenes(root: str | Path, split: str | None = None) -> list[str]:
    """Scene names with a 3D file in ``split`` (or, with ``split=None``, with a 2D folder)."""
    if split is not None:
        files = (Path(root) / "scannet_3d" / split).glob("*_vh_clean_2.pth")
        return sorted(f.name[: -len("_vh_clean_2.pth")] for f in files)
    return sorted(d.name for d in (Path(root) / "scannet_2d").glob("*") if d.is_dir())


# ---------------------------------------------------------------------------------------- 3D


def write_scannet_3d(path: str | Path, coords: npt.ArrayLike, colors: npt.ArrayLike,
                     labels: npt.ArrayLike) -> Path:
    """Write an OpenScene-style scene file.

    ``coords`` (N, 3) metres in the scene frame; ``colors`` (N, 3) uint8 RGB (stored as
    ``c / 127.5 - 1``) or floats already in [-1, 1]; ``labels`` (N,) ScanNet-20 indices / 255.
    """
    xyz = np.asarray(coords, dtype=np.float32)
    col = np.asarray(colors)
    col = col.astype(np.float32) / 127.5 - 1.0 if col.dtype == np.uint8 else col.astype(np.float32)
    lab = np.asarray(labels).astype(np.int64)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or col.shape != xyz.shape or lab.shape != (len(xyz),):
        raise ValueError(f"expected coords/colors (N, 3) and labels (N,), got {xyz.shape}, "
                         f"{col.shape}, {lab.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save((torch.from_numpy(xyz), torch.from_numpy(np.ascontiguousarray(col)),
                torch.from_numpy(lab)), path)
    return path


def _numpy_safe_globals() -> list[Any]:
    """The globals needed to rebuild plain numpy arrays, under both numpy 1 and 2 names."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return [
        np.ndarray,
        np.dtype,
        _reconstruct,
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        (_reconstruct, "numpy._core.multiarray._reconstruct"),
        *{type(np.dtype(t)) for t in ("f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8")},
    ]


def _as_array(x: Any) -> np.ndarray | None:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    return None


def read_scannet_3d(path: str | Path) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32],
                                                 npt.NDArray[np.int64]]:
    """Read a scene file: coords (N, 3) float32, colors (N, 3) float32 in [-1, 1], labels (N,)
    int64 (ScanNet-20 index, 255 or -100 = ignore). Never executes pickled code."""
    path = Path(path)
    if not path.is_file():
        raise ScanNetFormatError(f"{path}: ScanNet 3D scene file does not exist")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            data = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # corrupt zip, foreign pickle globals, truncated file...
        raise ScanNetFormatError(
            f"{path}: not a loadable ScanNet .pth (expected a torch-saved tuple of 3 arrays): {err}"
        ) from err
    arrays = [_as_array(x) for x in data] if isinstance(data, (tuple, list)) else []
    if len(arrays) != 3 or any(a is None for a in arrays):
        kind = type(data).__name__
        if isinstance(data, (tuple, list)):
            kind += f" of length {len(data)}"
        raise ScanNetFormatError(
            f"{path}: expected a tuple (coords, colors, labels) of arrays, got {kind}"
        )
    xyz, col, lab = arrays
    assert xyz is not None and col is not None and lab is not None
    n = len(xyz)
    if xyz.shape != (n, 3) or col.shape != (n, 3) or lab.reshape(-1).shape != (n,):
        raise ScanNetFormatError(
            f"{path}: array shapes do not match: coords {xyz.shape}, colors {col.shape}, "
            f"labels {lab.shape} (expected (N, 3), (N, 3), (N,))"
        )
    return xyz.astype(np.float32), col.astype(np.float32), lab.reshape(-1).astype(np.int64)


# ---------------------------------------------------------------------------------------- 2D


def read_matrix(path: str | Path) -> F64:
    """A 4x4 whitespace-separated matrix (pose or intrinsics); -inf/NaN are returned as is."""
    try:
        m = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as err:
        raise ScanNetFormatError(f"{path}: cannot read a 4x4 matrix: {err}") from err
    if m.shape != (4, 4):
        raise ScanNetFormatError(f"{path}: expected a 4x4 matrix, got shape {m.shape}")
    return m


def write_intrinsics(path: str | Path, K: npt.ArrayLike) -> Path:
    """Write a 3x3 K as ScanNet's 4x4 ``intrinsics.txt``."""
    M = np.eye(4)
    M[:3, :3] = np.asarray(K, dtype=np.float64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, M, fmt="%.9f")
    return path


def scale_intrinsics(K: npt.ArrayLike, sx: float, sy: float) -> F64:
    """K of an image resized by (sx, sy), pixel centres at integers: c' = (c + 0.5) s - 0.5."""
    K2 = np.array(K, dtype=np.float64)
    K2[0, 0] *= sx
    K2[0, 1] *= sx
    K2[1, 1] *= sy
    K2[0, 2] = (K2[0, 2] + 0.5) * sx - 0.5
    K2[1, 2] = (K2[1, 2] + 0.5) * sy - 0.5
    return K2


def write_scannet_2d_frame(scene_dir: str | Path, index: int, *, rgb: npt.ArrayLike,
                           depth_m: npt.ArrayLike, T_world_cam: npt.ArrayLike,
                           label: npt.ArrayLike | None = None, jpeg_quality: int = 95) -> None:
    """Write one frame: colour JPEG, uint16 mm depth PNG (0 = invalid), pose, NYU40 label PNG."""
    d = Path(scene_dir)
    for sub in ("color", "depth", "pose") + (("label",) if label is not None else ()):
        (d / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(d / "color" / f"{index}.jpg",
                                                          quality=jpeg_quality)
    mm = np.rint(np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0, posinf=0.0) * DEPTH_SCALE)
    mm = np.where((mm > 0) & (mm <= 65535), mm, 0).astype(np.uint16)
    Image.fromarray(mm).save(d / "depth" / f"{index}.png")
    np.savetxt(d / "pose" / f"{index}.txt", np.asarray(T_world_cam, dtype=np.float64), fmt="%.9f")
    if label is not None:
        lab = np.asarray(label)
        lab = lab.astype(np.uint8) if lab.max(initial=0) < 256 else lab.astype(np.uint16)
        Image.fromarray(lab).save(d / "label" / f"{index}.png")


def _load_image(path: Path, what: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except OSError as err:
        raise ScanNetFormatError(f"{path}: cannot read the {what} image: {err}") from err


@dataclass(frozen=True, eq=False)
class ScanNetFrame:
    """One posed frame of a ScanNet 2D scene (images are loaded on demand)."""

    index: int
    color_path: Path
    depth_path: Path
    label_path: Path | None
    T_world_cam: F64  # (4, 4) camera-to-world
    K_color: F64  # (3, 3) intrinsics of the colour image
    K_depth: F64  # (3, 3) intrinsics of the depth image
    color_size: tuple[int, int]  # (width, height)
    depth_size: tuple[int, int]  # (width, height)

    @property
    def depth_to_color_scale(self) -> tuple[float, float]:
        """(sx, sy) that map depth pixel coordinates to colour ones (1, 1 when same size)."""
        return (self.color_size[0] / self.depth_size[0], self.color_size[1] / self.depth_size[1])

    def load_rgb(self) -> npt.NDArray[np.uint8]:
        """(Hc, Wc, 3) uint8 RGB."""
        img = _load_image(self.color_path, "colour")
        return img[..., :3] if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)

    def load_depth_m(self, depth_scale: float = DEPTH_SCALE) -> npt.NDArray[np.float32]:
        """(Hd, Wd) float32 metres, 0 = invalid."""
        return (_load_image(self.depth_path, "depth").astype(np.float32) / depth_scale)

    def load_label(self) -> npt.NDArray[np.uint16]:
        """(H, W) uint16 NYU40 ids (0 = unlabelled)."""
        if self.label_path is None:
            scene = self.color_path.parent.parent
            raise ScanNetFormatError(f"frame {self.index} of {scene} has no label image")
        return _load_image(self.label_path, "label").astype(np.uint16)


@dataclass(frozen=True)
class ScanNet2DScene:
    """The frames of one scene plus how many were skipped and why."""

    name: str
    frames: tuple[ScanNetFrame, ...]
    skipped_invalid_pose: int  # pose with -inf / NaN entries
    skipped_missing: int  # colour without depth or pose file


def _scene_intrinsics(root: Path, scene_dir: Path) -> tuple[F64, F64 | None]:
    raw_c = scene_dir / "intrinsic" / "intrinsic_color.txt"
    raw_d = scene_dir / "intrinsic" / "intrinsic_depth.txt"
    if raw_c.is_file() and raw_d.is_file():
        return read_matrix(raw_c)[:3, :3], read_matrix(raw_d)[:3, :3]
    for candidate in (scene_dir / "intrinsics.txt", root / "scannet_2d" / "intrinsics.txt"):
        if candidate.is_file():
            return read_matrix(candidate)[:3, :3], None
    raise ScanNetFormatError(
        f"{scene_dir}: no intrinsics found (looked for intrinsic/intrinsic_color.txt + "
        f"intrinsic_depth.txt, {scene_dir / 'intrinsics.txt'}, {root / 'scannet_2d' / 'intrinsics.txt'})"
    )


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except OSError as err:
        raise ScanNetFormatError(f"{path}: cannot read the image header: {err}") from err


def read_scannet_2d_scene(root: str | Path, scene: str) -> ScanNet2DScene:
    """Index the frames of ``<root>/scannet_2d/<scene>`` (sorted by frame number).

    Image sizes are read from the first frame's headers (constant within a ScanNet scene).
    """
    root = Path(root)
    d = scene_2d_dir(root, scene)
    if not (d / "color").is_dir():
        raise ScanNetFormatError(f"{d}: not a ScanNet 2D scene (no color/ folder)")
    K_color, K_depth_raw = _scene_intrinsics(root, d)
    indexed = [(int(p.stem), p) for p in (d / "color").iterdir()
               if re.fullmatch(r"\d+", p.stem) and p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    frames: list[ScanNetFrame] = []
    invalid = missing = 0
    sizes: tuple[tuple[int, int], tuple[int, int], F64] | None = None
    for i, color in sorted(indexed):
        depth, pose = d / "depth" / f"{i}.png", d / "pose" / f"{i}.txt"
        if not depth.is_file() or not pose.is_file():
            missing += 1
            continue
        T = read_matrix(pose)
        if not np.all(np.isfinite(T)):
            invalid += 1
            continue
        if sizes is None:
            cs, ds = _image_size(color), _image_size(depth)
            K_depth = K_depth_raw if K_depth_raw is not None else scale_intrinsics(
                K_color, ds[0] / cs[0], ds[1] / cs[1])
            sizes = (cs, ds, K_depth)
        label = d / "label" / f"{i}.png"
        frames.append(ScanNetFrame(i, color, depth, label if label.is_file() else None, T,
                                   K_color, sizes[2], sizes[0], sizes[1]))
    return ScanNet2DScene(scene, tuple(frames), invalid, missing)
