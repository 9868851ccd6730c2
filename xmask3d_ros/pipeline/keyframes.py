"""Keyframe selection: which frames go to the (expensive) segmenter."""

from __future__ import annotations

import math

import numpy as np

from xmask3d_ros.config.pipeline import KeyframeCfg
from xmask3d_ros.geometry.transforms import SE3

__all__ = ["KeyframeSelector"]


class KeyframeSelector:
    """A frame is a keyframe when it is the first one, or since the last keyframe the camera
    moved ``min_translation_m``, turned ``min_rotation_deg``, or ``max_interval_s`` passed
    (stamps; a stamp older than the last keyframe's never triggers the interval rule)."""

    def __init__(self, cfg: KeyframeCfg | None = None) -> None:
        self._cfg = cfg if cfg is not None else KeyframeCfg()
        self._cos_min = math.cos(math.radians(self._cfg.min_rotation_deg))
        self.reset()

    def reset(self) -> None:
        self._pose: SE3 | None = None
        self._stamp_ns = 0

    def check(self, T_map_cam: SE3, stamp_ns: int) -> str:
        """The reason this frame is a keyframe ('first', 'translation', 'rotation', 'interval'),
        or '' when it is not. A keyframe becomes the new reference."""
        cfg = self._cfg
        reason = ""
        if self._pose is None:
            reason = "first"
        else:
            dt = T_map_cam.translation - self._pose.translation
            if float(np.dot(dt, dt)) >= cfg.min_translation_m**2:
                reason = "translation"
            else:
                # cos(angle) of the relative rotation: (trace(R0^T R1) - 1) / 2
                tr = float(np.sum(self._pose.rotation * T_map_cam.rotation))
                if (tr - 1.0) / 2.0 <= self._cos_min:
                    reason = "rotation"
                elif stamp_ns - self._stamp_ns >= cfg.max_interval_s * 1e9:
                    reason = "interval"
        if reason:
            self._pose = T_map_cam
            self._stamp_ns = int(stamp_ns)
        return reason
