"""Prompted segmentation of known objects (paper §7.1): one point or one box per object, scored by
IoU, and the interactive curve: mIoU after each of several corrective points."""

from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from ..data import MaskDataset, Sample
from ..masks import mask_to_bbox
from ..predictor import SamPredictor


@dataclass
class PromptScores:
    """Mean IoU over objects with the ground truth of: the most confident of the 3 masks from the
    object's center point, the best of those 3 ("oracle"), the single-mask output from that point,
    and the single-mask output from the object's box; `objects` counted; `interactive`: mIoU
    after 1, 2, ... points (the first is `confident`, see `prompt_scores`)."""

    confident: float
    oracle: float
    single: float
    box: float
    objects: int
    interactive: List[float]

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


def objects(dataset: MaskDataset, limit: Optional[int] = None,
            progress: Optional[str] = None) -> Iterator[Tuple[Sample, List[np.ndarray]]]:
    """(sample, its non-empty masks) for the first `limit` images of the dataset; with a
    `progress` label, a progress bar of that name."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in tqdm(range(count), desc=progress, unit="image", disable=progress is None):
        sample = dataset[index]
        yield sample, [m for m in sample.masks if m.any()]


def prompt_scores(predictor: SamPredictor, dataset: MaskDataset, limit: Optional[int] = None,
                  clicks: int = 1, progress: bool = False) -> PromptScores:
    """Prompt every object of the first `limit` images with its center point, then its box, and
    with `clicks` > 1 go on from the point's most confident mask with corrective points (the
    interactive curve, paper §7.1, Fig. 9): each next point is `corrective_point` of the current
    mask, decoded with all points so far to the single-mask output, the previous low-res logits
    as mask prompt. Once a mask equals the truth it stays, with IoU 1."""
    confident, oracle, single, box = [], [], [], []
    curve: List[List[float]] = [[] for _ in range(clicks)]
    for sample, truths in objects(dataset, limit, "prompts" if progress else None):
        predictor.set_image(sample.image)
        for truth in truths:
            center = center_point(truth)
            point, label = np.array([center], dtype=np.float64), np.array([1])
            masks, scores, low_res = predictor.predict(point, label, multimask_output=True)
            ious = [mask_iou(m, truth) for m in masks]
            best = int(np.argmax(scores))
            confident.append(ious[best])
            oracle.append(max(ious))
            (one,), _, _ = predictor.predict(point, label, multimask_output=False)
            single.append(mask_iou(one, truth))
            (from_box,), _, _ = predictor.predict(box=tight_box(truth), multimask_output=False)
            box.append(mask_iou(from_box, truth))
            for values, iou in zip(curve, _corrections(predictor, truth, center, masks[best], low_res[best], clicks)):
                values.append(iou)
    means = (mean_or_nan(values) for values in (confident, oracle, single, box))
    return PromptScores(*means, objects=len(oracle), interactive=[mean_or_nan(values) for values in curve])


def _corrections(predictor: SamPredictor, truth: np.ndarray, point: Tuple[int, int], mask: np.ndarray,
                 low_res: np.ndarray, clicks: int) -> List[float]:
    """IoU after 1..clicks points: `mask` (low-res logits `low_res`) from `point`, then one
    corrective point at a time."""
    points, labels = [point], [1]
    ious = [mask_iou(mask, truth)]
    while len(ious) < clicks:
        following = corrective_point(mask, truth)
        if following is None:  # the mask is the truth
            return ious + [1.0] * (clicks - len(ious))
        points.append(following[:2])
        labels.append(following[2])
        (mask,), _, (low_res,) = predictor.predict(np.array(points, dtype=np.float64), np.array(labels),
                                                   mask_input=low_res[None], multimask_output=False)
        ious.append(mask_iou(mask, truth))
    return ious


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


def mean_or_nan(values: List[float]) -> float:
    """The mean, or NaN for no values (a dataset with no objects)."""
    return float(np.mean(values)) if values else float("nan")
