"""Training: the paper's losses, simulated interactive prompts and the 11-round interaction."""

from .interactive import ROUNDS, Example, prepare_example, simulate_interaction
from .losses import dice_loss, mask_iou, sam_loss, sigmoid_focal_loss
from .prompts import Prompt, sample_correction_point, sample_first_prompt
from .warmup import init_for_localisation, localisation_warmup

__all__ = [
    "Example",
    "Prompt",
    "ROUNDS",
    "dice_loss",
    "init_for_localisation",
    "localisation_warmup",
    "mask_iou",
    "prepare_example",
    "sam_loss",
    "sample_correction_point",
    "sample_first_prompt",
    "sigmoid_focal_loss",
    "simulate_interaction",
]
