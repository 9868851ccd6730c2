"""Errors of the pipeline layer."""

from __future__ import annotations

__all__ = ["PipelineClosedError", "QueryError"]


class QueryError(ValueError):
    """A query was refused: bad labels (empty, too many, too long), mode or min_score.

    The message names the offending value and the limit; the engine counts every refusal.
    """


class PipelineClosedError(RuntimeError):
    """``step()`` or ``query()`` was called after ``close()``."""
