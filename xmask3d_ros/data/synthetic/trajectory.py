"""Handheld-like camera path: a wobbly loop around the room centre, looking across the room.

The camera walks at constant speed along an ellipse (radial wobble), at a slowly varying
height, and looks across the room centre at the far walls (where the furniture stands, 2-4 m
away as in ScanNet captures) with a slow left/right sweep and a looked-at height that drifts,
so pitch varies too. Hand shake is a sum of a few sinusoids
(0.3-2 Hz) in position and rotation: smooth, small, seeded. Poses are ``T_world_cam``
(camera-to-world, 4x4 float64) of the REP-103 optical frame (z forward, x right, y down) in the
z-up world frame. The path is continuous in time, so poses exist at any stamp.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from xmask3d_ros.config.synthetic import TrajectoryCfg

__all__ = ["Trajectory", "look_at", "make_trajectory", "rotvec_to_matrix"]

F64 = npt.NDArray[np.float64]


def rotvec_to_matrix(w: npt.ArrayLike) -> F64:
    """Rodrigues: (N, 3) rotation vectors (rad) -> (N, 3, 3) rotation matrices."""
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    theta = np.linalg.norm(w, axis=1)
    k = w / np.maximum(theta, 1e-12)[:, None]
    Kx = np.zeros((len(w), 3, 3))
    Kx[:, 0, 1], Kx[:, 0, 2], Kx[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    Kx -= Kx.transpose(0, 2, 1)
    s, c = np.sin(theta)[:, None, None], np.cos(theta)[:, None, None]
    return np.eye(3)[None] + s * Kx + (1.0 - c) * (Kx @ Kx)


def look_at(eye: npt.ArrayLike, target: npt.ArrayLike) -> F64:
    """(N, 3, 3) optical-frame rotations (columns x right, y down, z forward) for z-up worlds."""
    eye, target = np.atleast_2d(eye), np.atleast_2d(target)
    z = target - eye
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=2)


@dataclass(frozen=True)
class _Wave:
    """Sum of sinusoids per channel: amplitudes, frequencies (Hz), phases, each (C, K)."""

    amp: F64
    freq: F64
    phase: F64

    @staticmethod
    def draw(rng: np.random.Generator, channels: int, amplitude: float) -> _Wave:
        k = 3
        amp = amplitude * rng.uniform(0.3, 1.0, (channels, k)) / k
        return _Wave(amp, rng.uniform(0.3, 2.0, (channels, k)), rng.uniform(0, 2 * np.pi, (channels, k)))

    def __call__(self, t: F64) -> F64:
        """(N,) times -> (N, C) values."""
        arg = 2 * np.pi * self.freq[None] * t[:, None, None] + self.phase[None]
        return (self.amp[None] * np.sin(arg)).sum(axis=2)


@dataclass(frozen=True)
class Trajectory:
    """A continuous camera path; :meth:`poses` evaluates it at any times (s)."""

    room_size: tuple[float, float, float]
    centre: tuple[float, float]
    radii: tuple[float, float]
    height_m: float
    theta0: float
    direction: float  # +1 counter-clockwise, -1 clockwise
    speed_mps: float
    wobble: tuple[float, float]  # radial wobble amplitude (fraction), phase
    sweep: tuple[float, float, float]  # amplitude (rad), frequency (Hz), phase
    look_height: tuple[float, float, float, float]  # low, high (m), frequency (Hz), phase
    jitter_pos: _Wave
    jitter_rot: _Wave

    def positions(self, times: npt.ArrayLike) -> F64:
        """(N,) times (s) -> (N, 3) camera centres in the world frame (m)."""
        t = np.atleast_1d(np.asarray(times, dtype=np.float64))
        theta = self._theta(t)
        scale = 1.0 + self.wobble[0] * np.sin(2 * theta + self.wobble[1])
        p = np.stack([
            self.centre[0] + self.radii[0] * scale * np.cos(theta),
            self.centre[1] + self.radii[1] * scale * np.sin(theta),
            self.height_m + 0.05 * np.sin(0.3 * t),
        ], axis=1)
        return p + self.jitter_pos(t)

    def _theta(self, t: F64) -> F64:
        r_eff = math.sqrt((self.radii[0] ** 2 + self.radii[1] ** 2) / 2)
        return self.theta0 + self.direction * self.speed_mps * t / max(r_eff, 1e-6)

    def poses(self, times: npt.ArrayLike) -> F64:
        """(N,) times (s) -> (N, 4, 4) float64 ``T_world_cam`` of the optical frame."""
        t = np.atleast_1d(np.asarray(times, dtype=np.float64))
        eye = self.positions(t)
        amp, freq, phase = self.sweep
        psi = self._theta(t) + np.pi + amp * np.sin(2 * np.pi * freq * t + phase)
        d = np.stack([np.cos(psi), np.sin(psi)], axis=1)
        # Distance to the wall along d (2D slab exit); look at 85 % of it.
        lx, ly = self.room_size[0], self.room_size[1]
        with np.errstate(divide="ignore"):
            tx = np.where(d[:, 0] > 0, (lx - eye[:, 0]) / d[:, 0], -eye[:, 0] / d[:, 0])
            ty = np.where(d[:, 1] > 0, (ly - eye[:, 1]) / d[:, 1], -eye[:, 1] / d[:, 1])
        dist = np.minimum(np.abs(tx), np.abs(ty))
        lo, hi, f, ph = self.look_height
        zt = lo + (hi - lo) * (0.5 + 0.5 * np.sin(2 * np.pi * f * t + ph))
        target = np.column_stack([eye[:, :2] + 0.85 * dist[:, None] * d, zt])
        R = look_at(eye, target) @ rotvec_to_matrix(self.jitter_rot(t))
        T = np.tile(np.eye(4), (len(t), 1, 1))
        T[:, :3, :3], T[:, :3, 3] = R, eye
        return T

    def loop_period_s(self) -> float:
        """Time for one full loop (s)."""
        r_eff = math.sqrt((self.radii[0] ** 2 + self.radii[1] ** 2) / 2)
        return 2 * math.pi * r_eff / self.speed_mps


def make_trajectory(rng: np.random.Generator, cfg: TrajectoryCfg,
                    room_size: tuple[float, float, float],
                    distance: Callable[[F64], F64]) -> Trajectory:
    """Draw a path in the room and shrink its loop until every point keeps ``cfg.clearance_m``.

    ``distance`` maps (N, 3) world points to their distance to the nearest surface (m).
    """
    lx, ly, h = room_size
    frac = rng.uniform(0.15, 0.3)
    traj = Trajectory(
        room_size=room_size,
        centre=(lx / 2 + rng.uniform(-0.1, 0.1) * lx, ly / 2 + rng.uniform(-0.1, 0.1) * ly),
        radii=(max(0.3, frac * lx), max(0.3, frac * ly)),
        height_m=float(min(rng.uniform(*cfg.height_m), h - 0.3)),
        theta0=float(rng.uniform(0, 2 * np.pi)),
        direction=float(rng.choice([-1.0, 1.0])),
        speed_mps=cfg.speed_mps,
        wobble=(float(rng.uniform(0.0, 0.15)), float(rng.uniform(0, 2 * np.pi))),
        sweep=(math.radians(rng.uniform(*cfg.look_sweep_deg)), float(rng.uniform(0.03, 0.08)),
               float(rng.uniform(0, 2 * np.pi))),
        look_height=(*cfg.look_height_m, float(rng.uniform(0.05, 0.15)), float(rng.uniform(0, 6.28))),
        jitter_pos=_Wave.draw(rng, 3, cfg.jitter_pos_m),
        jitter_rot=_Wave.draw(rng, 3, math.radians(cfg.jitter_rot_deg)),
    )
    need = cfg.clearance_m + 0.05 + cfg.jitter_pos_m
    for _ in range(40):
        t = np.linspace(0.0, traj.loop_period_s(), 256, endpoint=False)
        if distance(traj.positions(t)).min() >= need:
            break
        # Too close to something: shrink the loop towards the centre, then nudge the centre
        # towards the room middle (where furniture is rarest).
        cx = 0.8 * traj.centre[0] + 0.2 * lx / 2
        cy = 0.8 * traj.centre[1] + 0.2 * ly / 2
        radii = (traj.radii[0] * 0.85, traj.radii[1] * 0.85)
        traj = dataclasses.replace(traj, centre=(cx, cy), radii=radii)
    return traj
