"""Tasks scored by pycocotools: object proposals (mask AR, paper §7.3) and instance segmentation
from box prompts (mask AP, paper §7.4), on any dataset with instance masks.

Every object of the dataset is one ground-truth instance of a single class "object"; COCO's
size ranges apply (small < 32², medium < 96² pixels, large above).
"""

import contextlib
import io
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..amg import SamAutomaticMaskGenerator
from ..data import MaskDataset, Sample
from ..errors import SegAnyError
from ..masks import Rle, mask_to_rle, rle_area, rle_ious, rles_to_boxes
from ..predictor import SamPredictor
from .plots import plot_curves
from .prompts import object_masks, tight_box
from .records import ImageRecords, each_image

AREAS = ("all", "small", "medium", "large")  # COCOeval's areaRng order


class _Collection:
    """Ground truth and results in COCO form, image ids 1, 2, ... in dataset order."""

    def __init__(self) -> None:
        self.images: List[dict] = []
        self.truths: List[dict] = []
        self.results: List[dict] = []

    def add_image(self, record: dict) -> None:
        """One image's `_image_record`: its size, true masks and results as RLEs."""
        image_id = len(self.images) + 1
        height, width = record["size"]
        self.images.append({"id": image_id, "height": height, "width": width})
        for truth, box in zip(record["truths"], rles_to_boxes(record["truths"]).tolist()):
            self.truths.append({"id": len(self.truths) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                                "segmentation": truth, "area": rle_area(truth), "bbox": box})
        for rle, score in record["results"]:
            self.results.append({"image_id": image_id, "category_id": 1, "segmentation": rle, "score": float(score)})

    def evaluate(self, max_dets: Sequence[int], use_cats: bool) -> COCOeval:
        if not self.truths:
            raise SegAnyError("no ground-truth objects to score against")
        quiet = contextlib.redirect_stdout(io.StringIO())  # pycocotools prints its progress
        with quiet:
            truth = COCO()
            truth.dataset = {"images": self.images, "annotations": self.truths,
                             "categories": [{"id": 1, "name": "object"}]}
            truth.createIndex()
            found = truth.loadRes(self.results) if self.results else COCO()
            evaluation = COCOeval(truth, found, "segm")
            evaluation.params.useCats = int(use_cats)
            evaluation.params.maxDets = list(max_dets)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        return evaluation


def _image_record(sample: Sample, results: Sequence[Tuple[Rle, float]]) -> dict:
    """What the COCO tasks keep of an image: its size, its objects and the results as RLEs."""
    return {"size": list(sample.image.shape[:2]), "truths": [mask_to_rle(t) for t in object_masks(sample)],
            "results": [[rle, float(score)] for rle, score in results]}


def _evaluate(per_image: Sequence[dict], max_dets: Sequence[int], use_cats: bool) -> COCOeval:
    collection = _Collection()
    for record in per_image:
        collection.add_image(record)
    return collection.evaluate(max_dets, use_cats)


def proposal_recall(generator: SamAutomaticMaskGenerator, dataset: MaskDataset, limit: Optional[int] = None,
                    max_dets: Sequence[int] = (10, 100, 1000), progress: bool = True,
                    records: Optional[ImageRecords] = None, figure: Optional[Path] = None) -> Dict[str, float]:
    """Mask average recall of the generator's masks as class-agnostic proposals ranked by predicted
    IoU: "AR@N" for each N of max_dets, and "AR@N small/medium/large" for the largest N; "mean best
    IoU": each object's highest IoU with any proposal (0 without proposals), averaged over objects;
    "proposals per image". Images are kept in `records` as they are done; `figure`: a PNG of recall
    over the IoU threshold."""
    if generator.output_mode != "coco_rle":
        raise SegAnyError("proposal_recall needs a generator with output_mode='coco_rle'")

    def proposals(sample: Sample) -> dict:
        found = generator.generate(sample.image)
        return _image_record(sample, [(r["segmentation"], r["predicted_iou"]) for r in found])

    per_image = each_image(dataset, limit, proposals, records, "proposals" if progress else None)
    evaluation = _evaluate(per_image, max_dets, use_cats=False)
    recall = evaluation.eval["recall"]  # IoU thresholds, 1, areas, max_dets
    scores = {f"AR@{n}": _mean_recall(recall[:, 0, 0, m]) for m, n in enumerate(max_dets)}
    for a, area in enumerate(AREAS[1:], start=1):
        scores[f"AR@{max_dets[-1]} {area}"] = _mean_recall(recall[:, 0, a, -1])
    best = [iou for record in per_image for iou in _best_ious(record)]
    scores["mean best IoU"] = float(np.mean(best)) if best else float("nan")
    scores["proposals per image"] = float(np.mean([len(record["results"]) for record in per_image]))
    if figure is not None:
        curves = {f"{area} objects": recall[:, 0, a, -1] for a, area in enumerate(AREAS)
                  if (recall[:, 0, a, -1] > -1).all()}  # -1: no object of that size
        plot_curves(curves, figure, f"recall of {max_dets[-1]} proposals per image", "IoU threshold", "recall",
                    x=evaluation.params.iouThrs)
    return scores


def _best_ious(record: dict) -> List[float]:
    """Per true object of an `_image_record`, its highest IoU with any of the results (0 without any)."""
    results = [rle for rle, _ in record["results"]]
    return rle_ious(results, record["truths"]).max(axis=0, initial=0.0).tolist()


def _mean_recall(values: np.ndarray) -> float:
    """Mean over IoU thresholds; -1 (no object of that size) gives NaN."""
    valid = values[values > -1]
    return float(valid.mean()) if len(valid) else float("nan")


def box_prompted_ap(predictor: SamPredictor, dataset: MaskDataset, limit: Optional[int] = None,
                    detections: Optional[Dict[str, List[dict]]] = None, progress: bool = True,
                    records: Optional[ImageRecords] = None, figure: Optional[Path] = None) -> Dict[str, float]:
    """Mask AP (COCO: AP, AP50, AP75, APs, APm, APl) of the single-mask output for box prompts.

    detections: image name -> [{"bbox": [x, y, w, h], "score": s}, ...] from a detector; the
    masks keep the detector's scores. Without it every object's tight box is a prompt, scored
    by the predicted IoU of its mask. Images are kept in `records` as they are done; `figure`: a
    PNG of the precision-recall curves at mask IoU 0.5 and 0.75.
    """

    def prompted(sample: Sample) -> dict:
        if detections is None:
            boxes = np.array([tight_box(t) for t in object_masks(sample)]).reshape(-1, 4)
            given_scores = None
        else:
            found = detections.get(sample.name, [])
            boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in found)]).reshape(-1, 4)
            given_scores = [d["score"] for d in found]
        if not len(boxes):
            return _image_record(sample, [])
        predictor.set_image(sample.image)
        masks, predicted_iou, _ = predictor.predict_batch(boxes=boxes, multimask_output=False)
        scores = predicted_iou[:, 0] if given_scores is None else given_scores
        return _image_record(sample, [(mask_to_rle(mask), score) for mask, score in zip(masks[:, 0], scores)])

    per_image = each_image(dataset, limit, prompted, records, "box prompts" if progress else None)
    evaluation = _evaluate(per_image, (1, 10, 100), use_cats=True)
    if figure is not None:
        precision = evaluation.eval["precision"]  # IoU thresholds, recall points, classes, areas, max_dets
        curves = {f"mask IoU {evaluation.params.iouThrs[t]:.2f}": np.maximum(precision[t, :, 0, 0, -1], 0)
                  for t in (0, 5)}
        plot_curves(curves, figure, "instances from box prompts", "recall", "precision", x=evaluation.params.recThrs)
    stats = evaluation.stats
    # COCOeval writes -1 where no object has that size.
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    return {name: float(v) if v > -1 else float("nan") for name, v in zip(names, stats)}
