"""Pipeline layer: posed frames -> local map -> keyframe segmentation -> text queries.

``from xmask3d_ros.pipeline import PerceptionPipeline`` is the entry point shared by the ROS node
and the replay tool; the query engine and the model protocols are usable on their own.
"""

from xmask3d_ros.pipeline.answers import (
    UNKNOWN_LABEL,
    LabelAnswer,
    ObjectAnswer,
    QueryAnswer,
    QueryMode,
)
from xmask3d_ros.pipeline.components import connected_components
from xmask3d_ros.pipeline.errors import PipelineClosedError, QueryError
from xmask3d_ros.pipeline.ground_truth import GroundTruthSegmenter, TableTextEncoder
from xmask3d_ros.pipeline.keyframes import KeyframeSelector
from xmask3d_ros.pipeline.pipeline import PerceptionPipeline, PipelineStats, StageTiming, StepResult
from xmask3d_ros.pipeline.query import QueryEngine, QueryStats, VoxelView, normalize_labels
from xmask3d_ros.pipeline.segmenter import SegmentationResult, Segmenter, TextEncoder

__all__ = [
    "UNKNOWN_LABEL",
    "GroundTruthSegmenter",
    "KeyframeSelector",
    "LabelAnswer",
    "ObjectAnswer",
    "PerceptionPipeline",
    "PipelineClosedError",
    "PipelineStats",
    "QueryAnswer",
    "QueryEngine",
    "QueryError",
    "QueryMode",
    "QueryStats",
    "SegmentationResult",
    "Segmenter",
    "StageTiming",
    "StepResult",
    "TableTextEncoder",
    "TextEncoder",
    "VoxelView",
    "connected_components",
    "normalize_labels",
]
