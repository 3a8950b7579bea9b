"""Zero-shot evaluation: prompting a model on datasets it was not trained on."""

from .baselines import grabcut_box_miou, grabcut_from_box
from .prompts import PromptScores, center_point, mask_iou, objects, prompt_scores, tight_box

__all__ = [
    "PromptScores",
    "center_point",
    "grabcut_box_miou",
    "grabcut_from_box",
    "mask_iou",
    "objects",
    "prompt_scores",
    "tight_box",
]
