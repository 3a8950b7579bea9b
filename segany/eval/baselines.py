"""Classical interactive segmentation with the same prompts, so that model numbers mean something."""

from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..data import MaskDataset, Sample
from .prompts import first_points, mask_iou, mean_or_nan, object_masks, tight_box
from .records import ImageRecords, each_image

GRABCUT_ITERATIONS = 5
POINT_BOX_FRACTION = 0.25  # side of the square around a point prompt, of the image's shorter side
RANDOM_WALKER_SIDE = 256  # pixels: the random walker's linear system grows with the image
RANDOM_WALKER_BETA = 130.0  # scikit-image's default edge penalty, for images scaled to [0, 1]
BASELINES = ("GrabCut box", "GrabCut point", "random walker point")


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


def grabcut_from_point(image: np.ndarray, point: Tuple[int, int], fraction: float = POINT_BOX_FRACTION) -> np.ndarray:
    """GrabCut from the square of side `fraction` x the image's shorter side centred on the point."""
    half = fraction * min(image.shape[:2]) / 2
    x, y = point
    return grabcut_from_box(image, np.array([x - half, y - half, x + half + 1, y + half + 1]))


def random_walker_from_points(image: np.ndarray, points: np.ndarray, labels: np.ndarray,
                              max_side: int = RANDOM_WALKER_SIDE) -> np.ndarray:
    """scikit-image's random walker seeded by the points (label 1 object, 0 background) and by
    the image border as background; run on the image scaled to `max_side` at most (solved
    directly: as fast as conjugate gradients at this size, and exact), the (H, W) bool result
    scaled back."""
    from skimage.segmentation import random_walker

    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else image
    seeds = np.zeros(small.shape[:2], dtype=np.int32)
    seeds[[0, -1], :] = seeds[:, [0, -1]] = 2  # the image border: background
    for (x, y), label in zip(points, labels):
        seeds[min(int(y * scale), seeds.shape[0] - 1), min(int(x * scale), seeds.shape[1] - 1)] = 1 if label else 2
    walked = random_walker(small.astype(np.float64) / 255, seeds, beta=RANDOM_WALKER_BETA, mode="bf",
                           channel_axis=-1) == 1
    return cv2.resize(walked.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)


def baseline_scores(dataset: MaskDataset, limit: Optional[int] = None, progress: bool = False,
                    records: Optional[ImageRecords] = None, first_point: str = "center") -> Dict[str, float]:
    """mIoU over the objects of the first `limit` images (kept in `records` as they are done) of
    the classical methods given the same prompts as the model (`image_baseline_scores`)."""
    per_image = each_image(dataset, limit, lambda sample: image_baseline_scores(sample, first_point), records,
                           "baselines" if progress else None)
    return {name: mean_or_nan([iou for image in per_image for iou in image[name]]) for name in BASELINES}


def image_baseline_scores(sample: Sample, first_point: str = "center") -> Dict[str, List[float]]:
    """IoU of each object of one image from GrabCut given its tight box, and from its first point
    (`first_points`) GrabCut (square around it) and the random walker."""
    ious: Dict[str, List[float]] = {name: [] for name in BASELINES}
    truths = object_masks(sample)
    for truth, point in zip(truths, first_points(sample, truths, first_point)):
        ious["GrabCut box"].append(mask_iou(grabcut_from_box(sample.image, tight_box(truth)), truth))
        ious["GrabCut point"].append(mask_iou(grabcut_from_point(sample.image, point), truth))
        walked = random_walker_from_points(sample.image, np.array([point]), np.array([1]))
        ious["random walker point"].append(mask_iou(walked, truth))
    return ious
