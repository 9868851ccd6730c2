"""Config of the pipeline layer: keyframe selection and the segmentation worker.

``PerceptionPipeline`` reads these (``PerceptionConfig.pipeline``) together with ``mapping``,
``visibility`` and ``query`` of the same root config.
"""

from __future__ import annotations

from dataclasses import dataclass

from xmask3d_ros.config.schema import param, section

__all__ = ["KeyframeCfg", "PipelineCfg"]


@dataclass(frozen=True)
class KeyframeCfg:
    """When a frame goes to the segmenter (the first frame always does)."""

    min_translation_m: float = param(
        0.15, "Camera moved at least this far (metres) since the last keyframe.", gt=0.0
    )
    min_rotation_deg: float = param(
        10.0, "Camera turned at least this much (degrees) since the last keyframe.", gt=0.0, le=180.0
    )
    max_interval_s: float = param(
        2.0,
        "A frame this long (stamp difference, seconds) after the last keyframe is a keyframe even "
        "without motion, so a static camera keeps refining the map.",
        gt=0.0,
    )


@dataclass(frozen=True)
class PipelineCfg:
    """How frames flow through the pipeline."""

    mode: str = param(
        "async",
        "sync: keyframes are segmented inside step() (deterministic; replay, tests). async: a "
        "worker thread segments them from a keep-latest slot; step() never waits for it (node).",
        choices=("sync", "async"),
    )
    keyframe: KeyframeCfg = section(KeyframeCfg, "keyframe selection")
    close_timeout_s: float = param(
        10.0, "close() waits this long (seconds) for the segmentation in flight to finish.", gt=0.0
    )
