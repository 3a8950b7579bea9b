"""Prompted segmentation of known objects (paper §7.1): one point or one box per object, scored by
IoU, and the interactive curve: mIoU after each of several corrective points."""

from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from ..data import MaskDataset, Sample
from ..masks import mask_to_bbox
from ..predictor import SamPredictor


@dataclass
class PromptScores:
    """Mean IoU over objects with the ground truth of: the most confident of the 3 masks from the
    object's center point, the best of those 3 ("oracle"), the single-mask output from that point,
    and the single-mask output from the object's box; `objects` counted."""

    confident: float
    oracle: float
    single: float
    box: float
    objects: int

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def center_point(mask: np.ndarray) -> Tuple[int, int]:
    """(x, y) of the mask pixel farthest from its boundary (the image border counts as one)."""
    padded = np.pad(mask.astype(np.uint8), 1)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(x), int(y)


def tight_box(mask: np.ndarray) -> np.ndarray:
    """(4,) x0, y0, x1, y1 in pixels of a non-empty mask, x1 and y1 exclusive."""
    x, y, w, h = mask_to_bbox(mask)
    return np.array([x, y, x + w, y + h], dtype=np.float64)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def objects(dataset: MaskDataset, limit: Optional[int] = None) -> Iterator[Tuple[Sample, List[np.ndarray]]]:
    """(sample, its non-empty masks) for the first `limit` images of the dataset."""
    for index in range(len(dataset) if limit is None else min(limit, len(dataset))):
        sample = dataset[index]
        yield sample, [m for m in sample.masks if m.any()]


def prompt_scores(predictor: SamPredictor, dataset: MaskDataset, limit: Optional[int] = None) -> PromptScores:
    """Prompt every object of the first `limit` images with its center point, then its box."""
    confident, oracle, single, box = [], [], [], []
    for sample, truths in objects(dataset, limit):
        predictor.set_image(sample.image)
        for truth in truths:
            point, label = np.array([center_point(truth)], dtype=np.float64), np.array([1])
            masks, scores, _ = predictor.predict(point, label, multimask_output=True)
            ious = [mask_iou(m, truth) for m in masks]
            confident.append(ious[int(np.argmax(scores))])
            oracle.append(max(ious))
            (one,), _, _ = predictor.predict(point, label, multimask_output=False)
            single.append(mask_iou(one, truth))
            (from_box,), _, _ = predictor.predict(box=tight_box(truth), multimask_output=False)
            box.append(mask_iou(from_box, truth))
    means = (mean_or_nan(values) for values in (confident, oracle, single, box))
    return PromptScores(*means, objects=len(oracle))


def corrective_point(predicted: np.ndarray, truth: np.ndarray) -> Optional[Tuple[int, int, int]]:
    """(x, y, label) of the next click: the interior point of the largest error region (the
    pixel farthest from its boundary), label 1 in a missed region, 0 in a spurious one; None
    when prediction and truth agree."""
    errors = (predicted != truth).astype(np.uint8)
    count, regions, stats, _ = cv2.connectedComponentsWithStats(errors, connectivity=8)
    if count < 2:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y = center_point(regions == largest)
    return x, y, int(truth[y, x])


def interactive_curve(predictor: SamPredictor, dataset: MaskDataset, clicks: int = 9,
                      limit: Optional[int] = None) -> List[float]:
    """mIoU over objects after 1..`clicks` points (paper §7.1, Fig. 9).

    The first point is the object's center point, decoded to 3 masks of which the most
    confident is kept; each next point is `corrective_point` of the current mask, decoded with
    all points so far to the single-mask output, the previous low-res logits as mask prompt.
    Once a mask equals the truth it stays, with IoU 1.
    """
    ious: List[List[float]] = [[] for _ in range(clicks)]
    for sample, truths in objects(dataset, limit):
        predictor.set_image(sample.image)
        for truth in truths:
            points, labels = [center_point(truth)], [1]
            logits = None
            for click in range(clicks):
                masks, scores, low_res = predictor.predict(np.array(points, dtype=np.float64), np.array(labels),
                                                           mask_input=logits, multimask_output=click == 0)
                best = int(np.argmax(scores))
                ious[click].append(mask_iou(masks[best], truth))
                logits = low_res[best][None]
                following = corrective_point(masks[best], truth)
                if following is None:
                    for rest in ious[click + 1:]:
                        rest.append(1.0)
                    break
                points.append(following[:2])
                labels.append(following[2])
    return [mean_or_nan(values) for values in ious]


def mean_or_nan(values: List[float]) -> float:
    """The mean, or NaN for no values (a dataset with no objects)."""
    return float(np.mean(values)) if values else float("nan")
