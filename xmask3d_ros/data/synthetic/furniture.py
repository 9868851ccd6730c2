"""Furniture builders: ScanNet-class objects composed of boxes and cylinders, with materials.

Each builder returns a list of :class:`Obj` (the main object first, then attached objects such
as pillows on a bed or chairs around a table), with parts in the *object frame*: origin on the
floor, x along the width, y along the depth with the back at -y (the side put against a wall)
and the front at +y. The layout module places and rotates them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from xmask3d_ros.data.synthetic.shapes import Box, Cylinder, Primitive
from xmask3d_ros.data.synthetic.texture import Material

__all__ = ["BUILDERS", "Obj", "Palette"]

RGB = tuple[float, float, float]

_WOOD: tuple[tuple[RGB, RGB], ...] = (
    ((0.74, 0.56, 0.37), (0.47, 0.31, 0.18)),
    ((0.56, 0.37, 0.21), (0.33, 0.20, 0.10)),
    ((0.86, 0.74, 0.55), (0.64, 0.49, 0.32)),
    ((0.40, 0.26, 0.15), (0.22, 0.13, 0.07)),
)
_PAINT: tuple[RGB, ...] = (
    (0.92, 0.91, 0.87), (0.88, 0.84, 0.76), (0.80, 0.84, 0.86), (0.86, 0.88, 0.80),
    (0.93, 0.86, 0.80), (0.78, 0.78, 0.78),
)  # fmt: skip
_FABRIC: tuple[RGB, ...] = (
    (0.55, 0.13, 0.12), (0.20, 0.30, 0.55), (0.35, 0.45, 0.30), (0.62, 0.56, 0.46),
    (0.30, 0.30, 0.33), (0.76, 0.64, 0.34), (0.50, 0.36, 0.56), (0.86, 0.85, 0.82),
)  # fmt: skip
_FURNITURE_PAINT: tuple[RGB, ...] = ((0.95, 0.95, 0.93), (0.22, 0.22, 0.24), (0.60, 0.70, 0.72))


class Palette:
    """Seeded material factory: per-instance colours jittered around per-class tone sets."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def _jit(self, c: RGB, amount: float = 0.07) -> RGB:
        v = np.clip(np.asarray(c) * (1.0 + self.rng.uniform(-amount, amount, 3)), 0.0, 1.0)
        return (float(v[0]), float(v[1]), float(v[2]))

    def _pick(self, options: tuple[RGB, ...]) -> RGB:
        return self._jit(options[int(self.rng.integers(len(options)))])

    def make(self, kind: str, base: RGB, alt: RGB = (0.0, 0.0, 0.0), scale_m: float = 0.1,
             axis: int = 0) -> Material:
        offset = tuple(float(x) for x in self.rng.uniform(0.0, 64.0, 3))
        return Material(kind, base, alt, scale_m, axis, offset)  # type: ignore[arg-type]

    def wood(self, axis: int = 0) -> Material:
        if self.rng.random() < 0.2:  # painted furniture
            return self.make("paint", self._pick(_FURNITURE_PAINT))
        light, dark = _WOOD[int(self.rng.integers(len(_WOOD)))]
        return self.make("wood", self._jit(light), self._jit(dark), self.rng.uniform(0.015, 0.035), axis)

    def paint(self) -> Material:
        return self.make("paint", self._pick(_PAINT))

    def fabric(self, folds_m: float = 0.0, axis: int = 0) -> Material:
        return self.make("fabric", self._pick(_FABRIC), scale_m=folds_m, axis=axis)

    def metal(self, axis: int = 2) -> Material:
        g = self.rng.uniform(0.55, 0.85)
        return self.make("metal", self._jit((g, g, g * 1.02), 0.03), axis=axis)

    def ceramic(self) -> Material:
        return self.make("ceramic", self._jit((0.93, 0.93, 0.91), 0.03))

    def stone(self) -> Material:
        tones = ((0.55, 0.53, 0.50), (0.85, 0.84, 0.80), (0.25, 0.25, 0.27))
        return self.make("stone", self._pick(tones), (0.1, 0.1, 0.1))

    def single(self, kind: str, base: RGB, alt: RGB = (0.0, 0.0, 0.0), scale_m: float = 0.0,
               axis: int = 0) -> Material:
        return self.make(kind, self._jit(base), self._jit(alt), scale_m, axis)


class Obj:
    """One object instance under construction: a class name and parts in the object frame."""

    def __init__(self, cls: str) -> None:
        self.cls = cls
        self.parts: list[tuple[Primitive, Material]] = []

    def box(self, m: Material, x: float, y: float, z0: float, sx: float, sy: float, sz: float
            ) -> Obj:
        """Axis-aligned box with size (sx, sy, sz) whose bottom face is at height z0."""
        self.parts.append((Box(np.array([x, y, z0 + sz / 2]), np.array([sx, sy, sz]) / 2,
                               np.eye(3)), m))
        return self

    def cyl(self, m: Material, x: float, y: float, z0: float, r: float, h: float) -> Obj:
        """Vertical cylinder of radius r and height h standing at height z0."""
        self.parts.append((Cylinder(np.array([x, y, z0 + h / 2]), np.array([r, r, h / 2]),
                                    np.eye(3)), m))
        return self

    def rod(self, m: Material, x: float, y: float, z: float, r: float, length: float) -> Obj:
        """Horizontal cylinder along the object x axis, centred at (x, y, z)."""
        R = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # local z -> x
        self.parts.append((Cylinder(np.array([x, y, z]), np.array([r, r, length / 2]), R), m))
        return self


Builder = Callable[[np.random.Generator, Palette], list[Obj]]


def _legs(o: Obj, m: Material, sx: float, sy: float, h: float, t: float, round_: bool) -> None:
    for x in (-sx / 2 + t, sx / 2 - t):
        for y in (-sy / 2 + t, sy / 2 - t):
            if round_:
                o.cyl(m, x, y, 0.0, t / 2, h)
            else:
                o.box(m, x, y, 0.0, t, t, h)


def chair(rng: np.random.Generator, P: Palette) -> list[Obj]:
    w, d, seat = rng.uniform(0.42, 0.5), rng.uniform(0.42, 0.5), rng.uniform(0.43, 0.48)
    frame = P.wood() if rng.random() < 0.6 else P.metal()
    top = P.fabric() if rng.random() < 0.5 else frame
    o = Obj("chair")
    _legs(o, frame, w, d, seat - 0.05, 0.04, rng.random() < 0.5)
    o.box(top, 0, 0, seat - 0.05, w, d, 0.05)
    o.box(top, 0, -d / 2 + 0.03, seat, w, 0.05, rng.uniform(0.38, 0.48))
    return [o]


def table(rng: np.random.Generator, P: Palette, n_chairs: int | None = None) -> list[Obj]:
    m, h = P.wood(), rng.uniform(0.72, 0.77)
    o = Obj("table")
    if rng.random() < 0.3:  # round table on a pedestal
        r = rng.uniform(0.4, 0.6)
        o.cyl(m, 0, 0, h - 0.04, r, 0.04).cyl(m, 0, 0, 0.0, 0.06, h - 0.04).cyl(m, 0, 0, 0, 0.25, 0.03)
        sx = sy = 2 * r
    else:
        sx, sy = rng.uniform(0.8, 1.6), rng.uniform(0.6, 0.9)
        o.box(m, 0, 0, h - 0.04, sx, sy, 0.04)
        _legs(o, m, sx, sy, h - 0.04, 0.05, False)
    objs = [o]
    n = int(rng.integers(0, 5)) if n_chairs is None else n_chairs
    for k in range(n):  # chairs facing the table from its four sides
        yaw = [0.0, math.pi, math.pi / 2, -math.pi / 2][k]
        dist = (sy if k < 2 else sx) / 2 + 0.15
        c = chair(rng, P)[0]
        _transform(c, dist * math.sin(yaw), -dist * math.cos(yaw), yaw)  # faces the centre
        objs.append(c)
    return objs


def _transform(o: Obj, x: float, y: float, yaw: float) -> None:
    """Move an object's parts by a yaw rotation then a translation (object frame)."""
    c, s = math.cos(yaw), math.sin(yaw)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    t = np.array([x, y, 0.0])
    o.parts = [(type(p)(R @ p.center + t, p.half, R @ p.R), m) for p, m in o.parts]


def desk(rng: np.random.Generator, P: Palette) -> list[Obj]:
    m, h = P.wood(), rng.uniform(0.72, 0.76)
    sx, sy = rng.uniform(1.0, 1.6), rng.uniform(0.55, 0.75)
    o = Obj("desk").box(m, 0, 0, h - 0.04, sx, sy, 0.04)
    o.box(m, sx / 2 - 0.22, 0, 0, 0.4, sy - 0.04, h - 0.04)  # drawer block
    o.box(m, -sx / 2 + 0.03, 0, 0, 0.04, sy - 0.04, h - 0.04)
    objs = [o]
    if rng.random() < 0.8:
        mon = Obj("monitor").cyl(P.metal(), -0.1, -sy / 2 + 0.15, h, 0.02, 0.12)
        mon.box(P.single("screen", (0.08, 0.1, 0.16), (0.05, 0.05, 0.05), 0.015, 0),
                -0.1, -sy / 2 + 0.15, h + 0.1, rng.uniform(0.5, 0.65), 0.03, rng.uniform(0.3, 0.38))
        objs.append(mon)
    if rng.random() < 0.4:
        objs.append(_table_lamp(P, sx / 2 - 0.2, -sy / 2 + 0.15, h))
    if rng.random() < 0.8:
        c = chair(rng, P)[0]
        _transform(c, -0.15, sy / 2 + 0.12, math.pi + rng.uniform(-0.4, 0.4))
        objs.append(c)
    return objs


def _table_lamp(P: Palette, x: float, y: float, z0: float) -> Obj:
    lamp = Obj("lamp").cyl(P.metal(), x, y, z0, 0.07, 0.02).cyl(P.metal(), x, y, z0 + 0.02, 0.012, 0.3)
    return lamp.cyl(P.single("fabric", (0.92, 0.88, 0.78)), x, y, z0 + 0.28, 0.12, 0.18)


def _pillows(rng: np.random.Generator, P: Palette, xs: list[float], y: float, z0: float) -> list[Obj]:
    m = P.fabric()
    return [Obj("pillow").box(m, x, y, z0, rng.uniform(0.45, 0.6), rng.uniform(0.3, 0.38),
                              rng.uniform(0.1, 0.15)) for x in xs]


def bed(rng: np.random.Generator, P: Palette) -> list[Obj]:
    w, ln, wood = rng.choice([0.95, 1.4, 1.6, 1.8]), rng.uniform(1.95, 2.1), P.wood()
    o = Obj("bed").box(wood, 0, 0, 0, w, ln, 0.3)
    o.box(P.single("fabric", (0.9, 0.9, 0.88)), 0, 0.02, 0.3, w - 0.06, ln - 0.1, 0.22)
    o.box(wood, 0, -ln / 2 + 0.04, 0, w, 0.08, rng.uniform(0.9, 1.2))
    xs = [0.0] if w < 1.2 else [-w / 4, w / 4]
    return [o, *_pillows(rng, P, xs, -ln / 2 + 0.3, 0.52)]


def sofa(rng: np.random.Generator, P: Palette) -> list[Obj]:
    w, d, m = rng.uniform(1.6, 2.4), rng.uniform(0.8, 0.95), P.fabric()
    o = Obj("sofa").box(m, 0, 0.05, 0.1, w - 0.36, d - 0.1, 0.32)
    o.box(m, 0, -d / 2 + 0.1, 0.1, w, 0.2, 0.7).box(P.metal(), 0, 0, 0, w - 0.2, d - 0.2, 0.1)
    for x in (-w / 2 + 0.09, w / 2 - 0.09):
        o.box(m, x, 0, 0.1, 0.18, d, 0.5)
    return [o, *_pillows(rng, P, [-w / 4, w / 4] if rng.random() < 0.6 else [], -d / 2 + 0.4, 0.42)]


def cabinet(rng: np.random.Generator, P: Palette) -> list[Obj]:
    w, d, h, m = rng.uniform(0.6, 1.2), rng.uniform(0.4, 0.6), rng.choice([0.8, 1.2, 1.9]), P.wood(2)
    o = Obj("cabinet").box(m, 0, 0, 0, w, d, h)
    for x in (-0.06, 0.06):  # handles
        o.box(P.metal(), x, d / 2 + 0.01, h * 0.6, 0.02, 0.02, 0.12)
    return [o]


def bookshelf(rng: np.random.Generator, P: Palette) -> list[Obj]:
    w, d, h, m = rng.uniform(0.7, 1.2), rng.uniform(0.28, 0.38), rng.uniform(1.5, 2.0), P.wood(2)
    o = Obj("bookshelf").box(m, 0, -d / 2 + 0.01, 0, w, 0.02, h)
    for x in (-w / 2 + 0.015, w / 2 - 0.015):
        o.box(m, x, 0, 0, 0.03, d, h)
    n = int(h / 0.35)
    for k in range(n + 1):
        z = min(k * h / n, h - 0.02)
        o.box(m, 0, 0, z, w - 0.06, d, 0.02)
        if k < n and rng.random() < 0.85:
            bw = rng.uniform(0.3, 1.0) * (w - 0.08)
            books = P.single("books", (1.0, 1.0, 1.0), scale_m=rng.uniform(0.025, 0.045))
            o.box(books, -(w - 0.08 - bw) / 2, 0, z + 0.02, bw, d - 0.04, rng.uniform(0.18, 0.28))
    return [o]


def counter(rng: np.random.Generator, P: Palette) -> list[Obj]:
    w, d = rng.uniform(1.2, 2.4), 0.62
    o = Obj("counter").box(P.wood(2), 0, -0.02, 0, w, d - 0.04, 0.86)
    o.box(P.stone(), 0, 0, 0.86, w, d, 0.04)
    objs = [o]
    if rng.random() < 0.8:
        x = rng.uniform(-w / 2 + 0.35, w / 2 - 0.35)
        s = Obj("sink").box(P.metal(0), x, 0.0, 0.9, 0.55, 0.42, 0.03)
        s.cyl(P.metal(), x, -d / 2 + 0.06, 0.9, 0.015, 0.28)
        objs.append(s)
    return objs


def refrigerator(rng: np.random.Generator, P: Palette) -> list[Obj]:
    w, d, h = rng.uniform(0.6, 0.8), rng.uniform(0.6, 0.72), rng.uniform(1.7, 1.95)
    m = P.metal() if rng.random() < 0.5 else P.single("paint", (0.95, 0.95, 0.95))
    o = Obj("refrigerator").box(m, 0, 0, 0, w, d, h)
    return [o.box(P.metal(), w / 2 - 0.08, d / 2 + 0.02, h * 0.45, 0.03, 0.04, 0.45)]


def toilet(rng: np.random.Generator, P: Palette) -> list[Obj]:
    m = P.ceramic()
    o = Obj("toilet").box(m, 0, -0.3, 0.38, 0.42, 0.18, 0.38)  # tank
    o.cyl(m, 0, 0.0, 0.0, 0.13, 0.3).cyl(m, 0, 0.02, 0.3, 0.19, 0.1)  # base, bowl
    return [o.box(m, 0, 0.02, 0.4, 0.36, 0.42, 0.02)]  # seat


def sink(rng: np.random.Generator, P: Palette) -> list[Obj]:
    m = P.ceramic()
    o = Obj("sink").cyl(m, 0, 0, 0, 0.1, 0.8).box(m, 0, 0.03, 0.8, rng.uniform(0.5, 0.6), 0.42, 0.12)
    return [o.cyl(P.metal(), 0, -0.12, 0.92, 0.015, 0.15)]


def bathtub(rng: np.random.Generator, P: Palette) -> list[Obj]:
    w, d, h, t, m = rng.uniform(1.5, 1.7), rng.uniform(0.7, 0.8), 0.55, 0.08, P.ceramic()
    o = Obj("bathtub").box(m, 0, 0, 0, w, d, 0.12)
    o.box(m, 0, -d / 2 + t / 2, 0.12, w, t, h - 0.12).box(m, 0, d / 2 - t / 2, 0.12, w, t, h - 0.12)
    for x in (-w / 2 + t / 2, w / 2 - t / 2):
        o.box(m, x, 0, 0.12, t, d - 2 * t, h - 0.12)
    cur = Obj("shower curtain").rod(P.metal(), 0, d / 2 - 0.05, 2.0, 0.012, w)
    cw = rng.uniform(0.5, 0.9) * w
    cur.box(P.fabric(0.1, 0), -w / 2 + cw / 2, d / 2 - 0.05, 0.65, cw, 0.02, 1.33)
    return [o, cur]


def nightstand(rng: np.random.Generator, P: Palette) -> list[Obj]:
    s, h = rng.uniform(0.4, 0.5), rng.uniform(0.5, 0.6)
    objs = [Obj("nightstand").box(P.wood(2), 0, 0, 0, s, s, h)]
    if rng.random() < 0.6:
        objs.append(_table_lamp(P, 0.0, 0.0, h))
    return objs


def floor_lamp(rng: np.random.Generator, P: Palette) -> list[Obj]:
    h, m = rng.uniform(1.4, 1.7), P.metal()
    o = Obj("lamp").cyl(m, 0, 0, 0, 0.15, 0.03).cyl(m, 0, 0, 0.03, 0.015, h - 0.3)
    return [o.cyl(P.single("fabric", (0.93, 0.9, 0.8)), 0, 0, h - 0.3, 0.2, 0.3)]


def plant(rng: np.random.Generator, P: Palette) -> list[Obj]:
    r, ph = rng.uniform(0.12, 0.2), rng.uniform(0.25, 0.4)
    o = Obj("plant").cyl(P.single("terracotta", (0.72, 0.38, 0.22)), 0, 0, 0, r, ph)
    leaves = P.single("leaves", (0.3, 0.55, 0.2), (0.08, 0.2, 0.06))
    o.cyl(leaves, 0, 0, ph, r * rng.uniform(1.3, 2.0), rng.uniform(0.3, 0.7))
    return [o]


def cardboard_box(rng: np.random.Generator, P: Palette) -> list[Obj]:
    s = rng.uniform(0.3, 0.6, 3)
    return [Obj("box").box(P.single("cardboard", (0.66, 0.5, 0.33)), 0, 0, 0, s[0], s[1], s[2] * 0.8)]


def other_furniture(rng: np.random.Generator, P: Palette) -> list[Obj]:
    o = Obj("otherfurniture")
    if rng.random() < 0.5:  # stool
        m = P.wood()
        o.cyl(m, 0, 0, 0.42, 0.18, 0.04)
        _legs(o, m, 0.26, 0.26, 0.42, 0.04, True)
    else:  # ottoman
        o.box(P.fabric(), 0, 0, 0, rng.uniform(0.5, 0.8), rng.uniform(0.4, 0.6), 0.42)
    return [o]


# Builder and placement mode ('wall': back against a wall; 'free': anywhere on the floor).
BUILDERS: dict[str, tuple[Builder, str]] = {
    "bed": (bed, "wall"), "sofa": (sofa, "wall"), "table": (table, "free"), "chair": (chair, "free"),
    "desk": (desk, "wall"), "cabinet": (cabinet, "wall"), "bookshelf": (bookshelf, "wall"),
    "counter": (counter, "wall"), "refrigerator": (refrigerator, "wall"), "toilet": (toilet, "wall"),
    "sink": (sink, "wall"), "bathtub": (bathtub, "wall"), "nightstand": (nightstand, "wall"),
    "lamp": (floor_lamp, "wall"), "plant": (plant, "wall"), "box": (cardboard_box, "free"),
    "otherfurniture": (other_furniture, "free"),
}  # fmt: skip
