"""Training: the paper's losses and simulated interactive prompts."""

from .losses import dice_loss, mask_iou, sam_loss, sigmoid_focal_loss
from .prompts import Prompt, sample_correction_point, sample_first_prompt

__all__ = [
    "Prompt",
    "dice_loss",
    "mask_iou",
    "sam_loss",
    "sample_correction_point",
    "sample_first_prompt",
    "sigmoid_focal_loss",
]
