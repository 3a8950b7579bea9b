"""Single point valid mask (paper §7.1): prompt each object with one point, score the masks."""

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

from ..data import MaskDataset
from ..predictor import SamPredictor


@dataclass
class PointScores:
    """Mean IoU over objects of: the most confident of the 3 masks, the best of the 3
    ("oracle") and the single-mask output; `objects` counted."""

    confident: float
    oracle: float
    single: float
    objects: int


def center_point(mask: np.ndarray) -> Tuple[int, int]:
    """(x, y) of the mask pixel farthest from its boundary (the image border counts as one)."""
    padded = np.pad(mask.astype(np.uint8), 1)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(x), int(y)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def single_point_scores(predictor: SamPredictor, dataset: MaskDataset, limit: Optional[int] = None) -> PointScores:
    """Prompt every mask of the first `limit` images with its center point."""
    confident, oracle, single = [], [], []
    for index in range(len(dataset) if limit is None else min(limit, len(dataset))):
        sample = dataset[index]
        predictor.set_image(sample.image)
        for truth in (m for m in sample.masks if m.any()):
            point, label = np.array([center_point(truth)], dtype=np.float64), np.array([1])
            masks, scores, _ = predictor.predict(point, label, multimask_output=True)
            ious = [mask_iou(m, truth) for m in masks]
            confident.append(ious[int(np.argmax(scores))])
            oracle.append(max(ious))
            (one,), _, _ = predictor.predict(point, label, multimask_output=False)
            single.append(mask_iou(one, truth))
    count = len(oracle)
    mean = (lambda values: float(np.mean(values)) if values else float("nan"))
    return PointScores(mean(confident), mean(oracle), mean(single), count)

