"""Zero-shot evaluation: prompting a model on datasets it was not trained on."""

from ..extras import require

require("eval", "segany.eval")

from .baselines import baseline_scores, grabcut_from_box, grabcut_from_point, random_walker_from_points
from .boundaries import BoundaryScores, boundary_counts, boundary_scores, edge_scores, human_agreement
from .edges import canny_edges, edge_nms, sam_edges, sobel_edges
from .prompts import (
    PromptScores,
    center_point,
    corrective_point,
    first_points,
    image_prompt_scores,
    mask_iou,
    object_masks,
    prompt_scores,
    tight_box,
)

__all__ = [
    "BoundaryScores",
    "PromptScores",
    "boundary_counts",
    "boundary_scores",
    "canny_edges",
    "edge_nms",
    "edge_scores",
    "first_points",
    "human_agreement",
    "image_prompt_scores",
    "sam_edges",
    "sobel_edges",
    "center_point",
    "corrective_point",
    "baseline_scores",
    "grabcut_from_box",
    "grabcut_from_point",
    "mask_iou",
    "object_masks",
    "prompt_scores",
    "random_walker_from_points",
    "tight_box",
]
