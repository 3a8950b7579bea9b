"""Zero-shot evaluation: prompting a model on datasets it was not trained on."""

from .baselines import baseline_scores, grabcut_from_box, grabcut_from_point, random_walker_from_points
from .prompts import (
    PromptScores,
    center_point,
    corrective_point,
    mask_iou,
    objects,
    prompt_scores,
    tight_box,
)

__all__ = [
    "PromptScores",
    "center_point",
    "corrective_point",
    "baseline_scores",
    "grabcut_from_box",
    "grabcut_from_point",
    "mask_iou",
    "objects",
    "prompt_scores",
    "random_walker_from_points",
    "tight_box",
]
