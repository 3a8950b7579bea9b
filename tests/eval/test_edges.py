"""Edge maps: edge NMS leaves one-pixel ridges, a predictor that knows the true regions gives
the true boundaries, and `segany eval edges` runs end to end and resumes."""

import json

import cv2
import numpy as np
import torch

from segany.cli import main
from segany.eval.boundaries import boundary_counts, boundary_scores
from segany.eval.edges import canny_edges, edge_nms, edge_orientation, sam_edges, sobel_edges


def blurred_line(vertical: bool) -> np.ndarray:
    edges = np.zeros((60, 80), np.float32)
    if vertical:
        edges[:, 40] = 1
    else:
        edges[30, :] = 1
    return cv2.GaussianBlur(edges, (0, 0), 2)


def test_orientation_is_the_normal_to_the_edge():
    assert np.allclose(edge_orientation(blurred_line(vertical=True))[10:50, 36:45], 0, atol=0.05)
    assert np.allclose(edge_orientation(blurred_line(vertical=False))[26:35, 10:70], np.pi / 2, atol=0.05)


def test_edge_nms_thins_to_one_pixel_ridges():
    for vertical in (True, False):
        thinned = edge_nms(blurred_line(vertical))
        inner = thinned[10:50, 10:70]
        per_line = (inner > 0).sum(axis=0 if not vertical else 1)
        assert (per_line == 1).all()
        assert inner.max() == blurred_line(vertical).max()  # the ridge keeps its strength
    assert edge_nms(np.ones((20, 20)))[0].max() == 0  # faded out at the border


class RegionOracle:
    """A stand-in predictor answering each point with the true region under it, as smooth logits
    (signed distance to the region's edge) at full resolution; its postprocessing is the identity."""

    mask_threshold = 0.0

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels
        self.model = self
        self.input_size = self.original_size = labels.shape

    def set_image(self, image):
        pass

    def predict_batch(self, points, labels, return_logits):
        logits = []
        for (x, y), in points:
            region = (self.labels == self.labels[int(y), int(x)]).astype(np.uint8)
            inside = cv2.distanceTransform(region, cv2.DIST_L2, 3)
            outside = cv2.distanceTransform(1 - region, cv2.DIST_L2, 3)
            logits.append(np.clip(inside - outside, -8, 8))
        logits = np.repeat(np.array(logits, np.float32)[:, None], 3, axis=1)  # (B, 3, H, W)
        iou = np.tile([0.9, 0.8, 0.7], (len(points), 1))
        return logits, iou, logits

    def postprocess_masks(self, masks, input_size, original_size):
        return torch.as_tensor(masks)


def test_true_regions_give_true_boundaries():
    labels = np.zeros((120, 160), np.int32)
    labels[20:90, 30:100] = 1
    labels[40:70, 50:80] = 2
    labels[60:110, 110:150] = 3
    truth = np.zeros(labels.shape, bool)  # the region edges, one pixel wide
    truth[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    truth[1:] |= labels[1:] != labels[:-1]
    image = np.zeros((*labels.shape, 3), np.uint8)
    edges = sam_edges(RegionOracle(labels), image, points_per_side=16)
    assert edges.shape == labels.shape and edges.dtype == np.float32
    assert edges.max() == 1 and edges.min() == 0
    scores = boundary_scores([boundary_counts(edges, [truth])])
    assert scores.ods > 0.95


def test_baselines_find_a_square():
    image = np.zeros((100, 100, 3), np.uint8)
    image[30:70, 30:70] = 200
    truth = np.zeros((100, 100), bool)
    truth[30:70, 30] = truth[30:70, 69] = truth[30, 30:70] = truth[69, 30:70] = True
    for detector in (sobel_edges, canny_edges):
        edges = detector(image)
        assert 0 <= edges.min() and edges.max() == 1
        assert boundary_scores([boundary_counts(edges, [truth])]).ods > 0.9, detector.__name__


def test_cli_edges_end_to_end_and_resume(tmp_path, shared_data):
    out = tmp_path / "edges"
    common = ["eval", "edges", "--data-root", str(shared_data), "--thresholds", "9", "--points-per-side", "8",
              "-o", str(out)]
    assert main([*common, "--limit", "1"]) == 0
    first = (out / "edges.jsonl").read_text().splitlines()
    assert main([*common, "--limit", "2", "--baselines"]) == 0
    lines = (out / "edges.jsonl").read_text().splitlines()
    assert lines[:2] == first and len(lines) == 3  # settings, the first image kept, the second added
    results = json.loads((out / "results.json").read_text())
    assert set(results["scores"]) == {"default", "Sobel", "Canny"}
    for scores in results["scores"].values():
        assert 0 <= scores["ods"] <= 1 and len(scores["precision"]) == 9
    assert 0.5 < 2 / (1 / results["human"]["recall"] + 1 / results["human"]["precision"]) < 1
    assert len(list((out / "edges").glob("*.png"))) == 2
    assert (out / "precision_recall.png").stat().st_size > 0
    assert main([*common, "--points-per-side", "4"]) == 2  # other settings: refused, not mixed
    no_boundaries = ["eval", "edges", "--data", "pennfudan", "--data-root", str(shared_data), "-o", str(tmp_path / "x")]
    assert main(no_boundaries) == 2  # one line, before any work
