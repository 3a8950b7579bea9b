"""Prompted segmentation of known objects (paper §7.1): one point or one box per object, scored by
IoU, and the interactive curve: mIoU after each of several corrective points."""

import zlib
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..data import MaskDataset, Sample
from ..errors import SegAnyError
from ..masks import mask_to_bbox
from ..predictor import SamPredictor
from .records import ImageRecords, each_image

SCORES = ("confident", "oracle", "single", "box")  # one IoU per object each


@dataclass
class PromptScores:
    """Mean IoU over objects with the ground truth of: the most confident of the 3 masks from the
    object's first point (its center, or a random pixel), the best of those 3 ("oracle"), the
    single-mask output from that point, and the single-mask output from the object's box;
    `objects` counted; `interactive`: mIoU after 1, 2, ... points (the first is `confident`, see
    `image_prompt_scores`); `iou_correlation`: Pearson correlation of the predicted and the true
    IoU of the 3 masks of every object's first point (how well the IoU head ranks masks)."""

    confident: float
    oracle: float
    single: float
    box: float
    objects: int
    interactive: List[float]
    iou_correlation: float = float("nan")

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


def object_masks(sample: Sample) -> List[np.ndarray]:
    """The non-empty masks of a sample: the objects to prompt."""
    return [m for m in sample.masks if m.any()]


def first_points(sample: Sample, truths: Sequence[np.ndarray], how: str = "center") -> List[Tuple[int, int]]:
    """The first point prompt (x, y) of each object: its `center_point` (how="center") or a pixel
    drawn uniformly from it (how="random", seeded by the image's name so that every run and every
    method gets the same points)."""
    if how == "center":
        return [center_point(truth) for truth in truths]
    if how != "random":
        raise SegAnyError(f"the first point is 'center' or 'random', not {how!r}")
    rng = np.random.default_rng(zlib.crc32(sample.name.encode()))
    points = []
    for truth in truths:
        ys, xs = np.nonzero(truth)
        drawn = int(rng.integers(len(xs)))
        points.append((int(xs[drawn]), int(ys[drawn])))
    return points


def prompt_scores(predictor: SamPredictor, dataset: MaskDataset, limit: Optional[int] = None,
                  clicks: int = 1, progress: bool = False, records: Optional[ImageRecords] = None,
                  first_point: str = "center") -> PromptScores:
    """`image_prompt_scores` of the first `limit` images (kept in `records` as they are done),
    averaged over all their objects."""
    per_image = each_image(dataset, limit, lambda sample: image_prompt_scores(predictor, sample, clicks, first_point),
                           records, "prompts" if progress else None)
    values = {key: [iou for image in per_image for iou in image[key]] for key in (*SCORES, "interactive")}
    curve = np.array(values.pop("interactive")).reshape(-1, clicks)  # (objects, clicks)
    predicted = np.array([v for image in per_image for ious in image.get("predicted_ious", []) for v in ious])
    true = np.array([v for image in per_image for ious in image.get("mask_ious", []) for v in ious])
    correlation = float(np.corrcoef(predicted, true)[0, 1]) if len(true) > 1 and true.std() > 0 else float("nan")
    return PromptScores(**{key: mean_or_nan(v) for key, v in values.items()}, objects=len(curve),
                        interactive=[mean_or_nan(list(column)) for column in curve.T], iou_correlation=correlation)


def image_prompt_scores(predictor: SamPredictor, sample: Sample, clicks: int = 1,
                        first_point: str = "center") -> Dict[str, List]:
    """IoU with the truth of each object of one image, prompted with one point (`first_points`:
    "center" or "random") and with its box (see `PromptScores` for the keys), "interactive": per
    object, the IoU after 1..clicks points, and "predicted_ious" and "mask_ious": per object, the
    predicted and the true IoU of the point's 3 masks.

    With `clicks` > 1 the points after the first go on from the point's most confident mask (the
    interactive curve, paper §7.1, Fig. 9): each next point is `corrective_point` of the current
    mask, decoded with all points so far to the single-mask output, the previous low-res logits
    as mask prompt. Once a mask equals the truth it stays, with IoU 1.
    """
    scores: Dict[str, List] = {key: [] for key in (*SCORES, "interactive", "predicted_ious", "mask_ious")}
    truths = object_masks(sample)
    if truths:
        predictor.set_image(sample.image)
    for truth, first in zip(truths, first_points(sample, truths, first_point)):
        point, label = np.array([first], dtype=np.float64), np.array([1])
        masks, predicted_iou, low_res = predictor.predict(point, label, multimask_output=True)
        ious = [mask_iou(m, truth) for m in masks]
        best = int(np.argmax(predicted_iou))
        scores["predicted_ious"].append([float(v) for v in predicted_iou])
        scores["mask_ious"].append(ious)
        scores["confident"].append(ious[best])
        scores["oracle"].append(max(ious))
        (one,), _, _ = predictor.predict(point, label, multimask_output=False)
        scores["single"].append(mask_iou(one, truth))
        (from_box,), _, _ = predictor.predict(box=tight_box(truth), multimask_output=False)
        scores["box"].append(mask_iou(from_box, truth))
        scores["interactive"].append(_corrections(predictor, truth, first, masks[best], low_res[best], clicks))
    return scores


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
