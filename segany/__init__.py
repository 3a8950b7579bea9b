"""segany: Segment Anything, promptable segmentation that loads the official SAM checkpoints.

Switching from Meta's package is one import:
    from segany import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry
"""

__version__ = "0.1.0"

from .amg import SamAutomaticMaskGenerator
from .build_sam import build_sam_vit_b, build_sam_vit_h, build_sam_vit_l, build_sam_vit_t, sam_model_registry
from .checkpoint import convert_checkpoint, detect_config, load_model, random_model, save_model
from .errors import CheckpointError, ImageError, SegAnyError
from .modeling import CONFIGS, Sam, SamConfig, build_sam
from .predictor import SamPredictor
from .sam2 import SAM2AutomaticMaskGenerator, SAM2ImagePredictor, build_sam2
from .transforms import ResizeLongestSide

__all__ = [
    "CONFIGS",
    "CheckpointError",
    "ImageError",
    "ResizeLongestSide",
    "SAM2AutomaticMaskGenerator",
    "SAM2ImagePredictor",
    "Sam",
    "SamAutomaticMaskGenerator",
    "SamConfig",
    "SamPredictor",
    "SegAnyError",
    "build_sam",
    "build_sam2",
    "build_sam_vit_b",
    "build_sam_vit_h",
    "build_sam_vit_l",
    "build_sam_vit_t",
    "convert_checkpoint",
    "detect_config",
    "load_model",
    "random_model",
    "sam_model_registry",
    "save_model",
]
