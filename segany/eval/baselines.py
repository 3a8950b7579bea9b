"""Classical interactive segmentation with the same prompts, so that model numbers mean something."""

from typing import Optional

import cv2
import numpy as np

from ..data import MaskDataset
from .prompts import mean_or_nan, mask_iou, objects, tight_box

GRABCUT_ITERATIONS = 5


def grabcut_from_box(image: np.ndarray, box: np.ndarray, iterations: int = GRABCUT_ITERATIONS) -> np.ndarray:
    """OpenCV GrabCut of the (H, W, 3) uint8 RGB image initialised with box (x0, y0, x1, y1):
    the (H, W) bool foreground. A box that leaves no background around it comes back filled."""
    height, width = image.shape[:2]
    x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
    x1, y1 = min(int(np.ceil(box[2])), width), min(int(np.ceil(box[3])), height)
    filled = np.zeros((height, width), dtype=bool)
    filled[y0:y1, x0:x1] = True
    if filled.all() or x1 - x0 < 2 or y1 - y0 < 2:
        return filled  # GrabCut needs background pixels and a box of some size
    labels = np.zeros((height, width), np.uint8)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = np.ascontiguousarray(image[..., ::-1])
    cv2.grabCut(bgr, labels, (x0, y0, x1 - x0, y1 - y0), background, foreground, iterations, cv2.GC_INIT_WITH_RECT)
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def grabcut_box_miou(dataset: MaskDataset, limit: Optional[int] = None) -> float:
    """Mean IoU of GrabCut from each object's box, over the objects of the first `limit` images."""
    ious = [
        mask_iou(grabcut_from_box(sample.image, tight_box(truth)), truth)
        for sample, truths in objects(dataset, limit)
        for truth in truths
    ]
    return mean_or_nan(ious)
