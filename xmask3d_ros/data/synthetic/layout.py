"""Procedural room layout: shell (walls, floor, ceiling, door, window) and furniture placement.

World frame: z up, the room spans ``[0, Lx] x [0, Ly] x [0, H]``. Walls are numbered
counter-clockwise: 0 at y = 0, 1 at x = Lx, 2 at y = Ly, 3 at x = 0; along each wall the
coordinate ``s`` runs counter-clockwise and the wall normal points into the room. Objects placed
against a wall get yaw so that their local +y (front) is the wall normal and local +x runs
along ``s``. Collisions are checked on 2D floor rectangles and on wall intervals (so low items
fit under a window and pictures hang above beds). Everything is drawn from one seeded Generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xmask3d_ros.config.synthetic import RoomCfg
from xmask3d_ros.data.classes import class_raw_id
from xmask3d_ros.data.synthetic.furniture import BUILDERS, Obj, Palette
from xmask3d_ros.data.synthetic.render import Light
from xmask3d_ros.data.synthetic.shapes import Part, Quad, rot_z
from xmask3d_ros.data.synthetic.texture import Material

__all__ = ["ROOM_MIX", "Layout", "generate_layout"]

# Per room type: mandatory items and weighted optional items (names are BUILDERS keys).
ROOM_MIX: dict[str, tuple[tuple[str, ...], dict[str, float]]] = {
    "bedroom": (("bed",), {"nightstand": 3, "cabinet": 2, "desk": 1, "chair": 1, "lamp": 1,
                           "plant": 1, "bookshelf": 1, "otherfurniture": 1, "box": 1}),
    "living_room": (("sofa",), {"table": 2, "chair": 1, "bookshelf": 2, "cabinet": 1, "lamp": 1,
                                "plant": 2, "otherfurniture": 1, "box": 1, "desk": 1}),
    "office": (("desk",), {"desk": 1, "chair": 1, "bookshelf": 2, "cabinet": 2, "table": 1,
                           "plant": 1, "lamp": 1, "box": 1, "otherfurniture": 1}),
    "kitchen": (("counter", "refrigerator"), {"cabinet": 2, "table": 2, "chair": 1, "plant": 1,
                                              "box": 1, "otherfurniture": 1, "counter": 1}),
    "bathroom": (("toilet", "sink", "bathtub"), {"cabinet": 2, "plant": 1, "box": 1,
                                                 "otherfurniture": 1, "sink": 1}),
}
_MARGIN = 0.06  # free space kept between neighbouring footprints (m)


@dataclass(frozen=True)
class Layout:
    """A generated room: shell + furniture parts, instance table and light."""

    room_type: str
    size_m: tuple[float, float, float]  # (Lx, Ly, H)
    parts: tuple[Part, ...]
    instance_classes: tuple[str, ...]  # class name of instance id k at index k (0 = none)
    light: Light
    n_furniture: int  # objects beyond the shell (walls, floor, ceiling, door, window)


class _Walls:
    def __init__(self, lx: float, ly: float) -> None:
        self.origin = np.array([[0, 0], [lx, 0], [lx, ly], [0, ly]], dtype=float)
        self.along = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=float)
        self.normal = np.array([[0, 1], [-1, 0], [0, -1], [1, 0]], dtype=float)
        self.length = np.array([lx, ly, lx, ly])
        self.yaw = np.array([0.0, math.pi / 2, math.pi, -math.pi / 2])

    def point(self, w: int, s: float, off: float) -> np.ndarray:
        return self.origin[w] + s * self.along[w] + off * self.normal[w]


class _Builder:
    """Accumulates parts, instances and occupancy while the room is being filled."""

    def __init__(self, rng: np.random.Generator, cfg: RoomCfg, size: tuple[float, float, float]):
        self.rng, self.cfg, self.size = rng, cfg, size
        self.walls = _Walls(size[0], size[1])
        self.palette = Palette(rng)
        self.parts: list[Part] = []
        self.classes: list[str] = ["none"]
        self.floor: list[tuple[np.ndarray, np.ndarray]] = []  # 2D AABBs (lo, hi)
        self.wall_spans: list[list[tuple[float, float, float, float]]] = [[] for _ in range(4)]
        self.n_furniture = 0

    def add(self, obj: Obj, R: np.ndarray, t: np.ndarray, *, furniture: bool = True) -> None:
        inst = len(self.classes)
        self.classes.append(obj.cls)
        label = class_raw_id(obj.cls)
        for prim, mat in obj.parts:
            world = type(prim)(R @ prim.center + t, prim.half, R @ prim.R)
            self.parts.append(Part(world, mat, label, inst))
        self.n_furniture += furniture

    def floor_free(self, lo: np.ndarray, hi: np.ndarray) -> bool:
        if np.any(lo < 0.0) or np.any(hi > np.array(self.size[:2])):
            return False
        return all(np.any(lo >= h + _MARGIN) or np.any(hi <= l - _MARGIN) for l, h in self.floor)

    def wall_free(self, w: int, s0: float, s1: float, z0: float, z1: float) -> bool:
        if s0 < 0.0 or s1 > self.walls.length[w]:
            return False
        return all(s1 <= a or s0 >= b or z1 <= c or z0 >= d for a, b, c, d in self.wall_spans[w])

    def wall_box(self, cls: str, mat: Material, w: int, s: float, z0: float, width: float,
                 height: float, front: float) -> None:
        """A thin object on wall ``w`` (door, window, picture) reaching 1 cm into the wall."""
        centre = self.walls.point(w, s, (front - 0.01) / 2)
        o = Obj(cls).box(mat, 0.0, 0.0, 0.0, width, front + 0.01, height)
        self.add(o, rot_z(self.walls.yaw[w]), np.array([centre[0], centre[1], z0]), furniture=False)
        self.wall_spans[w].append((s - width / 2, s + width / 2, z0, z0 + height))


def _footprint(objs: list[Obj]) -> tuple[np.ndarray, np.ndarray, float]:
    corners = np.concatenate([p.corners() for o in objs for p, _ in o.parts])
    return corners[:, :2].min(0), corners[:, :2].max(0), float(corners[:, 2].max())


def _place(b: _Builder, objs: list[Obj], mode: str) -> bool:
    """Try random poses for an object group; add it and return True on the first free one."""
    lo, hi, top = _footprint(objs)
    lx, ly = b.size[0], b.size[1]
    for _ in range(b.cfg.placement_attempts):
        if mode == "wall":
            w = int(b.rng.integers(4))
            L = b.walls.length[w]
            s_lo, s_hi = 0.02 - lo[0], L - 0.02 - hi[0]
            if s_lo > s_hi:
                continue
            s = b.rng.uniform(s_lo, s_hi)
            yaw = b.walls.yaw[w]
            t2 = b.walls.point(w, s, 0.01 - lo[1])
            if not b.wall_free(w, s + lo[0], s + hi[0], 0.0, top):
                continue
        else:
            yaw = b.rng.uniform(-math.pi, math.pi)
            t2 = np.array([b.rng.uniform(0.3, lx - 0.3), b.rng.uniform(0.3, ly - 0.3)])
        R = rot_z(yaw)
        box = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [lo[0], hi[1]], [hi[0], hi[1]]]) @ R[:2, :2].T
        wlo, whi = box.min(0) + t2, box.max(0) + t2
        if not b.floor_free(wlo, whi):
            continue
        for o in objs:
            b.add(o, R, np.array([t2[0], t2[1], 0.0]))
        b.floor.append((wlo, whi))
        if mode == "wall":
            b.wall_spans[w].append((s + lo[0], s + hi[0], 0.0, top))
        return True
    return False


def _shell(b: _Builder, room_type: str) -> None:
    lx, ly, h = b.size
    P, rng = b.palette, b.rng
    wet = room_type in ("bathroom", "kitchen")
    wall_mat = P.paint()
    if room_type == "bathroom" and rng.random() < 0.5:
        wall_mat = P.single("tiles", (0.85, 0.88, 0.9), (0.7, 0.7, 0.68), rng.uniform(0.1, 0.2), 2)
    for w in range(4):
        L = b.walls.length[w]
        c = b.walls.point(w, L / 2, 0.0)
        q = Quad.make([c[0], c[1], h / 2], [*b.walls.normal[w], 0.0], [*b.walls.along[w], 0.0],
                      L / 2, h / 2)
        accent = P.paint() if rng.random() < 0.15 else wall_mat
        b.parts.append(Part(q, accent, class_raw_id("wall"), len(b.classes)))
        b.classes.append("wall")
    if wet:
        floor_mat = P.single("tiles", (0.75, 0.72, 0.66), (0.45, 0.44, 0.42), rng.uniform(0.2, 0.45), 2)
    elif rng.random() < 0.7:
        tone = P.wood(0)
        floor_mat = P.make("planks", tone.base, tone.alt, rng.uniform(0.06, 0.1), 0)
        if tone.kind != "wood":  # painted furniture tone drawn: use carpet instead
            floor_mat = P.single("carpet", (0.45, 0.42, 0.38))
    else:
        floor_mat = P.single("carpet", (0.45, 0.42, 0.38))
    ceiling_mat = P.single("paint", (0.95, 0.95, 0.94))
    for cls, z, n, mat in (("floor", 0.0, 1.0, floor_mat), ("ceiling", h, -1.0, ceiling_mat)):
        q = Quad.make([lx / 2, ly / 2, z], [0.0, 0.0, n], [1.0, 0.0, 0.0], lx / 2, ly / 2)
        b.parts.append(Part(q, mat, class_raw_id(cls), len(b.classes)))
        b.classes.append(cls)
    # Door: on a random wall, with a keep-out zone in front of it for the swing.
    wd = int(rng.integers(4))
    dw, dh, L = rng.uniform(0.8, 0.95), rng.uniform(2.0, 2.1), b.walls.length[wd]
    s = rng.uniform(0.25 + dw / 2, L - 0.25 - dw / 2)
    b.wall_box("door", P.wood(2), wd, s, 0.0, dw, dh, 0.04)
    keep = np.array([b.walls.point(wd, s - dw / 2 - 0.1, 0.0), b.walls.point(wd, s + dw / 2 + 0.1, 0.9)])
    b.floor.append((keep.min(0), keep.max(0)))
    # Window: preferably on another wall; sill high enough for low furniture below.
    for _ in range(20):
        ww = int(rng.integers(4))
        L = b.walls.length[ww]
        width = rng.uniform(0.8, min(1.6, L - 1.0))
        sill, wh = rng.uniform(0.8, 1.0), rng.uniform(1.0, min(1.4, h - 1.15))
        s = rng.uniform(0.3 + width / 2, L - 0.3 - width / 2)
        if b.wall_free(ww, s - width / 2 - 0.45, s + width / 2 + 0.45, 0.0, h):
            break
    glass = P.single("glass", (0.72, 0.83, 0.95), (0.95, 0.95, 0.94), 0.05)
    b.wall_box("window", glass, ww, s, sill, width, wh, 0.05)
    if room_type != "kitchen" and rng.random() < 0.7:
        _curtains(b, ww, s, width, sill, wh)


def _curtains(b: _Builder, w: int, s: float, width: float, sill: float, wh: float) -> None:
    rng, P = b.rng, b.palette
    pw, top = rng.uniform(0.25, 0.4), min(sill + wh + 0.15, b.size[2] - 0.05)
    bottom = 0.02 if rng.random() < 0.6 else sill - 0.1
    mat, s0, s1 = P.fabric(0.11, 0), s - width / 2 - pw + 0.05, s + width / 2 + pw - 0.05
    if s0 < 0.05 or s1 > b.walls.length[w] - 0.05:
        return
    o = Obj("curtain").rod(P.metal(), 0.0, 0.08, top + 0.02, 0.012, s1 - s0 + 0.1)
    for sc in (s0 + pw / 2, s1 - pw / 2):
        o.box(mat, sc - (s0 + s1) / 2, 0.08, bottom, pw, 0.05, top - bottom)
    centre = b.walls.point(w, (s0 + s1) / 2, 0.0)
    b.add(o, rot_z(b.walls.yaw[w]), np.array([centre[0], centre[1], 0.0]))
    b.wall_spans[w].append((s0 - 0.05, s1 + 0.05, bottom, b.size[2]))
    if bottom < 0.5:
        ends = np.array([b.walls.point(w, s0 - 0.05, 0.0), b.walls.point(w, s1 + 0.05, 0.15)])
        b.floor.append((ends.min(0), ends.max(0)))


def _picture(b: _Builder) -> bool:
    rng = b.rng
    pw, ph = rng.uniform(0.3, 1.0), rng.uniform(0.3, 0.8)
    zc = rng.uniform(1.3, 1.7)
    z0 = min(zc - ph / 2, b.size[2] - 0.15 - ph)
    tone = (float(rng.uniform(0.3, 0.9)), float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.8)))
    frame = b.palette.single("paint", (0.15, 0.12, 0.1) if rng.random() < 0.5 else (0.9, 0.88, 0.85))
    mat = b.palette.make("picture", tone, frame.base, rng.uniform(0.02, 0.05))
    for _ in range(b.cfg.placement_attempts):
        w = int(rng.integers(4))
        s = rng.uniform(pw / 2 + 0.1, b.walls.length[w] - pw / 2 - 0.1)
        if b.wall_free(w, s - pw / 2 - 0.05, s + pw / 2 + 0.05, z0 - 0.05, z0 + ph + 0.05):
            b.wall_box("picture", mat, w, s, z0, pw, ph, 0.03)
            b.n_furniture += 1
            return True
    return False


def generate_layout(rng: np.random.Generator, cfg: RoomCfg) -> Layout:
    """Draw a room type, its size, the shell and between ``cfg.furniture_count`` items."""
    room_type = str(cfg.room_types[int(rng.integers(len(cfg.room_types)))])
    size = (float(rng.uniform(*cfg.size_x_m)), float(rng.uniform(*cfg.size_y_m)),
            float(rng.uniform(*cfg.height_m)))
    b = _Builder(rng, cfg, size)
    _shell(b, room_type)
    lo_n, hi_n = cfg.furniture_count
    target = int(rng.integers(lo_n, hi_n + 1))
    mandatory, optional = ROOM_MIX[room_type]
    names = list(optional)
    weights = np.array([optional[n] for n in names], dtype=float)
    weights /= weights.sum()
    queue = list(mandatory)
    if rng.random() < 0.8:
        _picture(b)
    failures = 0
    while b.n_furniture < target and failures < 40:
        name = queue.pop(0) if queue else names[int(rng.choice(len(names), p=weights))]
        builder, mode = BUILDERS[name]
        objs = builder(rng, b.palette)
        if b.n_furniture + len(objs) > hi_n or not _place(b, objs, mode):
            failures += 1
    # Top up with small items (pictures, boxes) when big ones did not fit.
    while b.n_furniture < lo_n and failures < 200:
        failures += 1
        if rng.random() < 0.5:
            _picture(b)
        else:
            _place(b, BUILDERS["box"][0](rng, b.palette), "free")
    # Per-room lighting: ceiling light near the centre, warm to neutral, brighter or dimmer.
    tint = ((1.0, 0.97, 0.92), (1.0, 1.0, 1.0), (1.0, 0.93, 0.84))[int(rng.integers(3))]
    light = Light(
        position=(size[0] * rng.uniform(0.35, 0.65), size[1] * rng.uniform(0.35, 0.65), size[2] - 0.3),
        ambient=float(rng.uniform(0.38, 0.5)), diffuse=float(rng.uniform(0.6, 0.85)), tint=tint,
    )
    return Layout(room_type, size, tuple(b.parts), tuple(b.classes), light, b.n_furniture)
