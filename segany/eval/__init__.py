"""Zero-shot evaluation: prompting a model on datasets it was not trained on."""

from .baselines import grabcut_box_miou, grabcut_from_box
from .prompts import (
    PromptScores,
    center_point,
    corrective_point,
    interactive_curve,
    mask_iou,
    objects,
    prompt_scores,
    tight_box,
)

__all__ = [
    "PromptScores",
    "center_point",
    "corrective_point",
    "grabcut_box_miou",
    "grabcut_from_box",
    "interactive_curve",
    "mask_iou",
    "objects",
    "prompt_scores",
    "tight_box",
]
