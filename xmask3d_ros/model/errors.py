"""Errors of the model layer (one home, STYLE "errors.py per layer").

``WeightsError`` is what every missing, unreadable or mismatching weights file raises: the SD
folders (``model.diffusion``), the CLIP checkpoint (``model.clip.ClipWeightsError`` is a
subclass), the empty-prompt constant and the project's own checkpoints (``model.build``). It
subclasses ``FileNotFoundError`` so callers that only know the standard library still catch the
"file is not there" case.
"""

from __future__ import annotations

__all__ = ["CheckpointMismatchError", "WeightsError"]


class WeightsError(FileNotFoundError):
    """A weights file or folder named in the config is missing or unusable.

    The message names the file, the config key and where such weights come from.
    """


class CheckpointMismatchError(WeightsError):
    """A checkpoint's tensors do not fit the model (missing/unexpected keys, wrong shapes)."""
