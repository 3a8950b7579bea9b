"""Proposal recall and box-prompted AP through pycocotools, checked with stand-ins whose answers
are known, then end to end with the bundled model on the command line."""

import json

import numpy as np
import pytest

from segany.cli import main
from segany.data import MaskDataset, Sample
from segany.errors import SegAnyError
from segany.eval.coco import box_prompted_ap, proposal_recall
from segany.masks import mask_to_bbox, mask_to_rle


class TwoImages(MaskDataset):
    """Image "a" with a large and a medium object, image "b" with one small object (COCO sizes)."""

    names = ["a", "b"]

    def load(self, name: str) -> Sample:
        masks = np.zeros((2, 200, 300), dtype=bool)
        if name == "a":
            masks[0, 20:150, 30:200] = True  # large: 130 x 170
            masks[1, 160:190, 220:270] = True  # medium: 30 x 50
        else:
            masks[0, 50:55, 60:66] = True  # small: 5 x 6
        return Sample(name, np.zeros((200, 300, 3), np.uint8), masks)


class Oracle:
    """A generator or predictor that answers with the true masks of the images as they come, the
    last `miss` objects of each image left out."""

    output_mode = "coco_rle"

    def __init__(self, dataset: MaskDataset, miss: int = 0) -> None:
        self.queue = [s.masks[s.masks.reshape(len(s.masks), -1).any(1)] for s in dataset]
        self.miss = miss

    def generate(self, image):
        masks = self.queue.pop(0)
        return [{"segmentation": mask_to_rle(m), "predicted_iou": 0.9} for m in masks[: len(masks) - self.miss]]

    def set_image(self, image):
        self.masks = self.queue.pop(0)

    def predict_batch(self, boxes, multimask_output):
        chosen = []
        for box in boxes:  # the true mask whose tight box this is, else nothing
            match = [m for m in self.masks if np.allclose(_xyxy(m), box)]
            chosen.append(match[0] if match else np.zeros(self.masks.shape[1:], dtype=bool))
        return np.array(chosen)[:, None], np.full((len(boxes), 1), 0.9), None


def _xyxy(mask):
    x, y, w, h = mask_to_bbox(mask)
    return [x, y, x + w, y + h]


def test_proposals_that_are_the_objects_recall_everything_and_missing_ones_count():
    scores = proposal_recall(Oracle(TwoImages()), TwoImages(), progress=False)
    assert scores["AR@10"] == scores["AR@1000"] == 1.0
    assert scores["AR@1000 small"] == scores["AR@1000 medium"] == scores["AR@1000 large"] == 1.0
    missing = proposal_recall(Oracle(TwoImages(), miss=1), TwoImages(), progress=False)
    # The last object of each image is left out: medium and small are never found, large always.
    assert missing["AR@1000 large"] == 1.0 and missing["AR@1000 medium"] == missing["AR@1000 small"] == 0.0
    assert missing["AR@1000"] == pytest.approx(1 / 3)
    assert scores["mean best IoU"] == 1.0 and scores["proposals per image"] == 1.5
    assert missing["mean best IoU"] == pytest.approx(1 / 3)  # the medium and the small object: 0 each
    with pytest.raises(SegAnyError, match="coco_rle"):
        bad = Oracle(TwoImages())
        bad.output_mode = "binary_mask"
        proposal_recall(bad, TwoImages(), progress=False)


def test_box_prompted_ap_of_perfect_masks_is_one_and_detections_keep_their_scores():
    assert box_prompted_ap(Oracle(TwoImages()), TwoImages(), progress=False)["AP"] == 1.0
    large = _xyxy(TwoImages()[0].masks[0])
    medium = _xyxy(TwoImages()[0].masks[1])
    detections = {"a": [{"bbox": [large[0], large[1], large[2] - large[0], large[3] - large[1]], "score": 0.8},
                        {"bbox": [medium[0], medium[1], 5, 5], "score": 0.9}]}  # a wrong box, ranked first
    scores = box_prompted_ap(Oracle(TwoImages()), TwoImages(), detections=detections, progress=False)
    assert 0 < scores["AP"] < 1 and scores["APl"] == pytest.approx(1) and scores["APm"] == 0.0


def test_eval_boxes_and_proposals_on_the_command_line(tmp_path, shared_data):
    common = ["--data", "pennfudan", "--data-root", str(shared_data), "--limit", "2"]
    assert main(["eval", "boxes", *common, "-o", str(tmp_path / "boxes")]) == 0
    boxes = json.loads((tmp_path / "boxes" / "results.json").read_text())["scores"]
    assert 0 <= boxes["AP"] <= 1 and boxes["APs"] is None  # no small pedestrians: null, not NaN
    assert main(["eval", "proposals", *common, "--points-per-side", "8", "-o", str(tmp_path / "proposals")]) == 0
    proposals = json.loads((tmp_path / "proposals" / "results.json").read_text())["scores"]
    assert 0 <= proposals["AR@1000"] <= 1
    for figure in (tmp_path / "boxes" / "precision_recall.png", tmp_path / "proposals" / "recall_iou.png"):
        assert figure.read_bytes().startswith(b"\x89PNG")
    records = (tmp_path / "proposals" / "proposals.jsonl").read_text().splitlines()
    assert len(records) == 1 + 2 and '"points_per_side": 8' in records[0]
    (tmp_path / "det.json").write_text(json.dumps([{"image_id": "nosuch", "bbox": [0, 0, 5, 5], "score": 1}]))
    assert main(["eval", "boxes", *common, "--detections", str(tmp_path / "det.json"), "-o", str(tmp_path)]) == 2
