"""Procedural solid textures: per-class colour statistics that vary the way real ones do.

A :class:`Material` is a texture kind plus a few seeded parameters; :func:`albedo` evaluates it
at surface points given in the primitive's local frame (metres), so one object's texture moves
with it and the same function colours rendered pixels and ground-truth surface samples alike.
Kinds: painted walls with low-frequency shading, wood grain (rings warped by noise, fine streaks),
floor planks, tiles with grout, fabric (noise, weave, curtain folds), carpet, ceramic, brushed
metal, speckled stone, glass with a frame, pictures, screens, leaves, terracotta, book rows,
cardboard. Everything is vectorised over points; noise comes from a seeded periodic lattice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["KINDS", "Material", "NoiseField", "albedo"]

F32 = npt.NDArray[np.float32]

KINDS = (
    "paint", "wood", "planks", "tiles", "fabric", "carpet", "ceramic", "metal", "stone", "glass",
    "picture", "screen", "leaves", "terracotta", "books", "cardboard",
)  # fmt: skip

_N = 64  # lattice period (cells); with per-material offsets repetition is not visible


class NoiseField:
    """Seeded value noise on a periodic ``64^3`` lattice (smoothstep-trilinear), values in [0, 1]."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.table: F32 = rng.random(_N**3, dtype=np.float32)

    def value(self, p: npt.ArrayLike) -> F32:
        """(N, 3) points in lattice units -> (N,) float32 noise."""
        p = np.asarray(p, dtype=np.float32)
        i = np.floor(p)
        f = p - i
        u = f * f * (3.0 - 2.0 * f)
        i0 = i.astype(np.int32) & (_N - 1)
        i1 = (i0 + 1) & (_N - 1)
        xs, ys, zs = (i0[:, 0], i1[:, 0]), (i0[:, 1], i1[:, 1]), (i0[:, 2], i1[:, 2])
        t = self.table
        out = np.zeros(len(p), dtype=np.float32)
        for a in (0, 1):
            wx = u[:, 0] if a else 1.0 - u[:, 0]
            for b in (0, 1):
                wxy = wx * (u[:, 1] if b else 1.0 - u[:, 1])
                base = (xs[a] * _N + ys[b]) * _N
                out += wxy * ((1.0 - u[:, 2]) * t[base + zs[0]] + u[:, 2] * t[base + zs[1]])
        return out

    def fbm(self, p: npt.ArrayLike, octaves: int = 3) -> F32:
        """Fractal sum of ``octaves`` noise layers (frequency x2, amplitude x0.5), in [0, 1]."""
        p = np.asarray(p, dtype=np.float32)
        total = np.zeros(len(p), dtype=np.float32)
        amp, norm = 1.0, 0.0
        for k in range(octaves):
            total += amp * self.value(p * (2.0**k) + 17.3 * k)
            norm += amp
            amp *= 0.5
        return total / norm

    def cell(self, idx: npt.NDArray[np.int64]) -> F32:
        """Per-cell random value for integer (N, 3) cell indices (tile / plank / book tones)."""
        i = idx & (_N - 1)
        return self.table[(i[:, 0] * _N + i[:, 1]) * _N + i[:, 2]]


@dataclass(frozen=True)
class Material:
    """A texture kind with its seeded parameters (colours are linear RGB in [0, 1])."""

    kind: str  # one of KINDS
    base: tuple[float, float, float]  # main colour
    alt: tuple[float, float, float] = (0.0, 0.0, 0.0)  # second colour: grain, grout, frame, bezel
    scale_m: float = 0.1  # feature size: ring spacing, tile/plank/book width, frame width, fold period
    axis: int = 0  # local axis of grain / planks / folds / book rows
    offset: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0))  # noise-space offset

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown material kind {self.kind!r}; known: {', '.join(KINDS)}")


def _mix(a: F32, b: F32, t: F32) -> F32:
    return a[None, :] * (1.0 - t[:, None]) + b[None, :] * t[:, None]


def _others(axis: int) -> tuple[int, int]:
    return tuple(a for a in range(3) if a != axis)  # type: ignore[return-value]


def _frame_mask(p: F32, half: F32, width: float) -> npt.NDArray[np.bool_]:
    """True near the border of the two largest extents (window frames, picture frames, bezels)."""
    a, b = np.argsort(half)[1:]
    edge = np.minimum(half[a] - np.abs(p[:, a]), half[b] - np.abs(p[:, b]))
    return edge < width


def albedo(mat: Material, p_local: npt.ArrayLike, half: npt.ArrayLike, noise: NoiseField) -> F32:
    """Surface colour of ``mat`` at (N, 3) local points (m); ``half``: primitive half-extents (3,).

    Returns (N, 3) float32 linear RGB in [0, 1] (before lighting).
    """
    p = np.asarray(p_local, dtype=np.float32)
    h = np.asarray(half, dtype=np.float32)
    q = p + np.asarray(mat.offset, dtype=np.float32)
    base = np.asarray(mat.base, dtype=np.float32)
    alt = np.asarray(mat.alt, dtype=np.float32)
    n = len(p)
    kind = mat.kind
    if kind == "paint":
        # Uneven light and roller marks: a low-frequency field plus a faint fine grain.
        g = 1.0 + 0.16 * (noise.fbm(q * 0.9, 3) - 0.5) + 0.04 * (noise.value(q * 45.0) - 0.5)
        col = base[None, :] * g[:, None]
    elif kind in ("wood", "planks"):
        ax = mat.axis
        o1, o2 = _others(ax)
        warp = 0.9 * noise.fbm(q * np.float32(2.5), 2)
        r = np.sqrt(q[:, o1] ** 2 + (q[:, o2] + 1.7) ** 2) / mat.scale_m + 3.0 * warp
        rings = (0.5 + 0.5 * np.sin(2.0 * np.pi * r)) ** 3
        stretch = q.copy()
        stretch[:, ax] *= 3.0
        stretch[:, o1] *= 90.0
        stretch[:, o2] *= 90.0
        streak = noise.value(stretch)
        t = np.clip(0.55 * rings + 0.45 * streak, 0.0, 1.0)
        col = _mix(base, alt, t)
        if kind == "planks":
            width = mat.scale_m * 1.6
            across = p[:, o1] / width
            plank = np.floor(across)
            stagger = noise.cell(np.stack([plank, plank * 0, plank * 0 + 3], 1).astype(np.int64))
            along = np.floor(p[:, ax] / 1.2 + stagger * 7.0)
            tone = noise.cell(np.stack([plank, along, plank * 0 + 5], 1).astype(np.int64))
            col = col * (0.8 + 0.35 * tone)[:, None]
            seam = ((across - plank) < 0.03) | (((p[:, ax] / 1.2 + stagger * 7.0) % 1.0) < 0.008)
            col[seam] *= 0.45
    elif kind == "tiles":
        o1, o2 = _others(mat.axis)
        u, v = p[:, o1] / mat.scale_m, p[:, o2] / mat.scale_m
        cu, cv = np.floor(u), np.floor(v)
        tone = noise.cell(np.stack([cu, cv, cu * 0 + 9], 1).astype(np.int64))
        col = base[None, :] * (0.9 + 0.18 * tone)[:, None]
        col *= (1.0 + 0.05 * (noise.value(q * 30.0) - 0.5))[:, None]
        grout = ((u - cu) < 0.04) | ((v - cv) < 0.04)
        col[grout] = alt
    elif kind in ("fabric", "carpet"):
        freq = 25.0 if kind == "fabric" else 60.0
        amp = 0.22 if kind == "fabric" else 0.45
        g = 1.0 + amp * (noise.fbm(q * freq, 2) - 0.5)
        o1, o2 = _others(2)
        weave = np.sin(2 * np.pi * p[:, o1] / 0.006) * np.sin(2 * np.pi * p[:, o2] / 0.006)
        g = g + 0.04 * weave
        if kind == "fabric" and mat.scale_m > 0.0:
            # Curtain-like folds: a shading wave across the fold axis, warped by noise.
            phase = p[:, mat.axis] / mat.scale_m + 0.5 * noise.value(q * 3.0)
            g = g * (0.8 + 0.25 * np.sin(2 * np.pi * phase))
        col = base[None, :] * g[:, None]
    elif kind == "ceramic":
        col = base[None, :] * (0.96 + 0.06 * noise.fbm(q * 6.0, 2))[:, None]
    elif kind == "metal":
        brushed = q * np.float32(3.0)
        brushed[:, _others(mat.axis)[0]] *= 60.0  # streaks run along ``axis``
        col = base[None, :] * (0.88 + 0.2 * noise.value(brushed))[:, None]
    elif kind == "stone":
        g = 0.85 + 0.25 * noise.fbm(q * 8.0, 3)
        col = base[None, :] * g[:, None]
        speck = noise.value(q * 220.0) > 0.82
        col[speck] = alt
    elif kind == "glass":
        # Bright sky-ish gradient (upwards along local z) inside a painted frame.
        t = np.clip(0.5 + p[:, 2] / (2.0 * max(float(h[2]), 1e-3)), 0.0, 1.0)
        col = _mix(base, np.minimum(base * 1.25, 1.0), t.astype(np.float32))
        col *= (1.0 + 0.1 * (noise.fbm(q * 1.5, 2) - 0.5))[:, None]
        col[_frame_mask(p, h, mat.scale_m)] = alt
    elif kind == "picture":
        c3 = np.clip(1.0 - 0.7 * base, 0.0, 1.0).astype(np.float32)
        t1 = noise.fbm(q * 4.0, 3)
        t2 = noise.fbm(q * 4.0 + 31.0, 3)
        col = _mix(base, c3, np.clip(2.0 * t1 - 0.5, 0, 1).astype(np.float32))
        col = col * (0.6 + 0.4 * t2[:, None]) + (0.4 * t2[:, None]) * base[None, ::-1]
        col[_frame_mask(p, h, mat.scale_m)] = alt
    elif kind == "screen":
        t = noise.fbm(q * 2.0, 2)
        col = base[None, :] * (0.8 + 0.4 * t)[:, None]
        col[_frame_mask(p, h, mat.scale_m)] = alt
    elif kind == "leaves":
        t = noise.fbm(q * 28.0, 3)
        col = _mix(alt, base, np.clip(1.8 * t - 0.4, 0, 1).astype(np.float32))
    elif kind == "terracotta":
        col = base[None, :] * (0.85 + 0.25 * noise.fbm(q * 12.0, 2))[:, None]
    elif kind == "books":
        # Rows of spines: one random colour per book along ``axis``, darker gaps between them.
        u = p[:, mat.axis] / mat.scale_m + 0.5 * noise.value(q * 0.5)
        book = np.floor(u)
        hue = np.stack([
            noise.cell(np.stack([book, book * 0 + k, book * 0 + 11], 1).astype(np.int64))
            for k in range(3)
        ], 1)
        col = 0.15 + 0.7 * hue * base[None, :]
        col[(u - book) < 0.06] *= 0.4
    else:  # cardboard
        col = base[None, :] * (0.85 + 0.3 * noise.fbm(q * 20.0, 2))[:, None]
    if col.shape != (n, 3):
        col = np.broadcast_to(col, (n, 3))
    return np.clip(col, 0.0, 1.0).astype(np.float32, copy=False)
