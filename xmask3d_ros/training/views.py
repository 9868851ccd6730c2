"""ScanNet-layout scenes as per-view training samples (reference-notes §1.2, §1.7).

One sample = one frame of a scene plus the scene points visible in it: the reference picks a
random frame and keeps it only when ``min_visible < visible < max_visible`` and more than
``min_labelled`` visible points carry an evaluated label, else draws again. Frames come from
:func:`~xmask3d_ros.data.scannet_layout.read_scannet_2d_scene` (frames with -inf poses are
skipped there); visibility is the reference test of :class:`~xmask3d_ros.geometry.camera.
PinholeCamera` on the depth image (10 px border, 25 % relative depth tolerance).

The image given to the model is the colour frame resized to the depth resolution, so a visible
point's depth pixel is also its image pixel (raw ScanNet: 1296x968 colour -> 640x480). Every
random draw comes from ``numpy.random.default_rng((seed, epoch, index))``, so a sample depends
only on its coordinates: resuming a run reproduces it exactly. ``augment`` applies the reference's
random rotation and scale of the 3D input (§1.1) to training draws (never to evaluation views).
"""

from __future__ import annotations

from collections import OrderedDict
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from xmask3d_ros.config.training import DataCfg
from xmask3d_ros.data.labels import LabelSet, label_set
from xmask3d_ros.data.partitions import Partition, get_partition
from xmask3d_ros.data.scannet_layout import (
    ScanNet2DScene,
    ScanNetFormatError,
    ScanNetFrame,
    list_scannet_scenes,
    read_scannet_2d_scene,
    read_scannet_3d,
    scene_3d_path,
)
from xmask3d_ros.geometry.camera import PinholeCamera

__all__ = ["Scene", "ViewSample", "ViewDataset", "load_scene"]


@dataclass(frozen=True, eq=False)
class Scene:
    """A scene's points (label-set indices; ignore value elsewhere) and its 2D frames."""

    name: str
    points: npt.NDArray[np.float32]  # (N, 3) scene frame
    colors: npt.NDArray[np.uint8]  # (N, 3) RGB
    labels: npt.NDArray[np.int64]  # (N,) label-set index or ignore (from the 3D file)
    frames: ScanNet2DScene


@dataclass(frozen=True, eq=False)
class ViewSample:
    """One view: image and the visible scene points with their pixels and labels."""

    scene: str
    frame: int
    image: npt.NDArray[np.uint8]  # (H, W, 3) colour at depth resolution
    point_index: npt.NDArray[np.int64]  # (Nv,) rows of the scene's points
    points: npt.NDArray[np.float32]  # (Nv, 3)
    colors: npt.NDArray[np.uint8]  # (Nv, 3)
    rows: npt.NDArray[np.int64]  # (Nv,)
    cols: npt.NDArray[np.int64]  # (Nv,)
    labels: npt.NDArray[np.int64]  # (Nv,) label-set index, ignore elsewhere
    labels_2d: npt.NDArray[np.int64] | None  # (H, W) label-set index per pixel (None: no label/)


def _raw_lut(ls: LabelSet) -> npt.NDArray[np.int64]:
    lut = np.full(1 << 16, ls.ignore_index, dtype=np.int64)
    if ls.raw_ids is not None:
        lut[np.asarray(ls.raw_ids)] = np.arange(len(ls.raw_ids))
    return lut


def load_scene(root: str | Path, split: str, name: str, ls: LabelSet) -> Scene:
    """Read a scene's 3D file (plus ScanNet200 ``.txt`` labels) and index its frames."""
    xyz, col, lab = read_scannet_3d(scene_3d_path(root, split, name))
    if ls.name == "scannet200":
        txt = Path(root) / "scannet_3d_200" / split / f"{name}.txt"
        if not txt.is_file():
            raise ScanNetFormatError(f"{txt}: ScanNet200 label file missing (one raw id per point)")
        raw = np.loadtxt(txt, dtype=np.int64, ndmin=1)
        if raw.shape != lab.shape:
            raise ScanNetFormatError(f"{txt}: {raw.shape[0]} labels for {lab.shape[0]} points")
        lab = _raw_lut(ls)[np.clip(raw, 0, (1 << 16) - 1)]
    else:
        lab = np.where((lab >= 0) & (lab < len(ls.classes)), lab, ls.ignore_index)
    colors = np.clip(np.rint((col + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return Scene(name, xyz, colors, lab.astype(np.int64), read_scannet_2d_scene(root, name))


class ViewDataset:
    """Views of the scenes of one split; ``sample(i, epoch)`` (training draw) or
    ``views_of_scene(s)`` (every accepted frame, evaluation)."""

    SCENE_CACHE = 64  # scenes kept in memory (a real ScanNet scene is a few MB)

    def __init__(self, cfg: DataCfg, split: str, *, seed: int = 0) -> None:
        self.cfg = cfg
        self.split = split
        self.seed = int(seed)
        self.labels: LabelSet = label_set(cfg.label_set)
        self.partition: Partition = get_partition(cfg.partition)
        if self.partition.labels.name != self.labels.name:
            raise ValueError(f"data.partition: {cfg.partition} is a partition of "
                             f"{self.partition.labels.name}, not of {self.labels.name}")
        names = list_scannet_scenes(cfg.root, split)
        if cfg.max_scenes:
            names = names[: cfg.max_scenes]
        if not names:
            raise ScanNetFormatError(f"data.root: no scenes under {Path(cfg.root) / 'scannet_3d' / split}")
        self.scene_names = names
        self._scenes: OrderedDict[str, Scene] = OrderedDict()  # LRU of loaded scenes
        self._lut = _raw_lut(self.labels)
        self._evaluated = np.zeros(len(self.labels.classes) + 1, dtype=bool)
        self._evaluated[self.partition.evaluated_indices] = True

    def __len__(self) -> int:
        return len(self.scene_names) * self.cfg.loop

    def scene(self, name: str) -> Scene:
        """The scene called ``name`` (the last ``SCENE_CACHE`` scenes stay in memory)."""
        if name in self._scenes:
            self._scenes.move_to_end(name)
            return self._scenes[name]
        scene = load_scene(self.cfg.root, self.split, name, self.labels)
        self._scenes[name] = scene
        while len(self._scenes) > self.SCENE_CACHE:
            self._scenes.popitem(last=False)
        return scene

    def _labelled(self, labels: npt.NDArray[np.int64]) -> int:
        ok = (labels >= 0) & (labels < len(self.labels.classes))
        return int(self._evaluated[np.where(ok, labels, len(self.labels.classes))].sum())

    def view(self, scene: Scene, frame: ScanNetFrame, *, check: bool = True) -> ViewSample | None:
        """The view of ``frame``; None when it fails the selection rule (``check``)."""
        cfg = self.cfg
        depth = frame.load_depth_m()
        h, w = depth.shape
        K = frame.K_depth
        cam = PinholeCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2], width=w, height=h)
        T = frame.T_world_cam
        pts_cam = (scene.points.astype(np.float64) - T[:3, 3]) @ T[:3, :3]
        vis, rows, cols = cam.visible_pixels(pts_cam, depth, border_px=cfg.border_px,
                                             depth_tolerance_rel=cfg.depth_tolerance_rel)
        idx = np.flatnonzero(vis)
        if check and not (cfg.min_visible < idx.size < cfg.max_visible):
            return None
        r, c = rows[idx].astype(np.int64), cols[idx].astype(np.int64)
        labels_2d = None
        if frame.label_path is not None:
            raw = frame.load_label()
            if raw.shape != (h, w):
                raw = np.asarray(Image.fromarray(raw).resize((w, h), Image.Resampling.NEAREST))
            labels_2d = self._lut[raw.astype(np.int64)]
        if cfg.label_source == "image":
            if labels_2d is None:
                raise ScanNetFormatError(
                    f"data.label_source=image: frame {frame.index} of {scene.name} has no label image")
            labels = labels_2d[r, c]
        else:
            labels = scene.labels[idx]
        if check and self._labelled(labels) <= cfg.min_labelled:
            return None
        rgb = frame.load_rgb()
        if not rgb.flags.writeable:  # PIL-backed; torch wants writable memory
            rgb = rgb.copy()
        if rgb.shape[:2] != (h, w):
            rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))
        return ViewSample(scene.name, frame.index, rgb, idx.astype(np.int64),
                          scene.points[idx], scene.colors[idx], r, c, labels.astype(np.int64), labels_2d)

    def sample(self, index: int, epoch: int) -> ViewSample:
        """Training view ``index`` of ``epoch``: random frames until one passes (§1.2)."""
        name = self.scene_names[index % len(self.scene_names)]
        scene = self.scene(name)
        if not scene.frames.frames:
            raise ScanNetFormatError(f"{name}: no usable frames (all poses invalid or files missing)")
        rng = np.random.default_rng((self.seed, epoch, index))
        for _ in range(self.cfg.max_tries):
            frame = scene.frames.frames[int(rng.integers(len(scene.frames.frames)))]
            v = self.view(scene, frame)
            if v is not None:
                return self._augment(v, rng) if self.cfg.augment else v
        raise ScanNetFormatError(
            f"{name}: no frame passed the view selection in {self.cfg.max_tries} tries "
            f"(visible in ({self.cfg.min_visible}, {self.cfg.max_visible}), labelled > "
            f"{self.cfg.min_labelled})")

    def base_label_counts(self) -> npt.NDArray[np.int64]:
        """(num_base,) labelled samples per base class over the split, from the labels
        training uses: the 3D files' points, or every frame's label image
        (``label_source=image``; pixels, which is what the views' points inherit)."""
        nb = self.partition.num_base
        counts = np.zeros(nb, dtype=np.int64)
        for name in self.scene_names:
            if self.cfg.label_source == "image":
                arrays = [self._lut[f.load_label().astype(np.int64)]
                          for f in read_scannet_2d_scene(self.cfg.root, name).frames
                          if f.label_path is not None]
            else:
                arrays = [self.scene(name).labels]
            for labels in arrays:
                lab = self.partition.train_labels(labels.ravel())
                counts += np.bincount(lab[lab < nb], minlength=nb)
        return counts

    @staticmethod
    def _augment(v: ViewSample, rng: np.random.Generator) -> ViewSample:
        """The reference voxelizer's training jitter of the 3D input (§1.1): a full turn about
        z, up to pi/64 about x and y, scale in [0.9, 1.1]. Pixels and labels are unchanged
        (they were found before), so only the 3D branch sees the transformed points."""
        az = rng.uniform(-np.pi, np.pi)
        ax, ay = rng.uniform(-np.pi / 64, np.pi / 64, size=2)
        cz, sz, cx, sx, cy, sy = np.cos(az), np.sin(az), np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay)
        rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        m = (rz @ rx @ ry) * rng.uniform(0.9, 1.1)
        pts = (v.points.astype(np.float64) @ m.T).astype(np.float32)
        return dataclasses.replace(v, points=pts)

    def views_of_scene(self, name: str) -> list[ViewSample]:
        """Every ``eval_frame_stride``-th frame passing the inference filter (§1.2)."""
        scene = self.scene(name)
        out = []
        for frame in scene.frames.frames[:: self.cfg.eval_frame_stride]:
            v = self.view(scene, frame)
            if v is not None:
                out.append(v)
        return out
