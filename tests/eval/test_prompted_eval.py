import numpy as np
import pytest

import segany
from conftest import MICRO
from segany.data import shared_dataset
from segany.eval import (
    center_point,
    corrective_point,
    baseline_scores,
    first_points,
    grabcut_from_box,
    grabcut_from_point,
    image_prompt_scores,
    prompt_scores,
    random_walker_from_points,
    tight_box,
)


def test_center_point_is_farthest_from_the_boundary():
    mask = np.zeros((50, 80), dtype=bool)
    mask[10:31, 30:51] = True  # 21 x 21: centre (40, 20)
    assert center_point(mask) == (40, 20)
    mask[10:31, 20:71] = True  # 21 x 51: any point of the middle row far enough from the ends
    x, y = center_point(mask)
    assert y == 20 and 30 <= x <= 60
    ring = np.zeros((60, 60), dtype=bool)
    ring[5:55, 5:55] = True
    ring[15:45, 15:45] = False  # the centre is a hole: the point lies in the ring itself
    x, y = center_point(ring)
    assert ring[y, x]
    edge = np.zeros((20, 20), dtype=bool)
    edge[:, :6] = True  # touching the image border: the border counts as boundary
    assert center_point(edge)[0] in (2, 3)


def test_tight_box_has_exclusive_ends():
    mask = np.zeros((20, 30), dtype=bool)
    mask[4:9, 10:21] = True
    assert tight_box(mask).tolist() == [10, 4, 21, 9]


def test_prompt_scores_are_ious(shared_data):
    predictor = segany.SamPredictor(segany.random_model(MICRO, seed=2))
    dataset = shared_dataset("pennfudan", "eval", shared_data)
    scores = prompt_scores(predictor, dataset, limit=2)
    assert scores.objects == sum(len(dataset[i].masks) for i in range(2))
    assert 0 <= scores.confident <= scores.oracle <= 1
    assert 0 <= scores.single <= 1 and 0 <= scores.box <= 1


def test_iou_correlation_measures_how_the_iou_head_ranks_masks(shared_data, monkeypatch):
    from segany.eval import prompts

    predictor = segany.SamPredictor(segany.random_model(MICRO, seed=2))
    dataset = shared_dataset("pennfudan", "eval", shared_data)
    real = prompt_scores(predictor, dataset, limit=1)
    assert -1 <= real.iou_correlation <= 1
    true = [[0.9, 0.5, 0.1], [0.2, 0.7, 0.4]]
    for predicted, expected in ((true, 1.0), ([[1 - v for v in ious] for ious in true], -1.0)):
        record = {key: [] for key in ("confident", "oracle", "single", "box", "interactive")}
        record.update(predicted_ious=predicted, mask_ious=true)
        monkeypatch.setattr(prompts, "image_prompt_scores", lambda *args, **kwargs: record)
        assert prompt_scores(predictor, dataset, limit=1).iou_correlation == pytest.approx(expected)


def _disc_scene(radius=30):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (120, 160, 3)).astype(np.uint8)  # dark noise
    yy, xx = np.mgrid[:120, :160]
    disc = (xx - 90) ** 2 + (yy - 60) ** 2 < radius**2
    image[disc] = (230, 200, 40)
    return image, disc


def test_grabcut_finds_a_distinct_object_in_its_box():
    image, disc = _disc_scene()
    box = tight_box(disc) + [-6, -6, 6, 6]
    found = grabcut_from_box(image, box)
    assert (found & disc).sum() / (found | disc).sum() > 0.95
    whole = grabcut_from_box(image, np.array([0, 0, 160, 120]))  # nothing outside: the box itself
    assert whole.all()


def test_point_baselines_find_a_distinct_object_from_its_centre():
    image, disc = _disc_scene()
    walked = random_walker_from_points(image, np.array([[90, 60]]), np.array([1]))
    assert (walked & disc).sum() / (walked | disc).sum() > 0.9
    walked_small = random_walker_from_points(image, np.array([[90, 60]]), np.array([1]), max_side=80)
    assert walked_small.shape == disc.shape and (walked_small & disc).sum() / (walked_small | disc).sum() > 0.8
    # The square around the point (a quarter of the shorter side: 30 px) holds a small disc...
    image, small_disc = _disc_scene(radius=10)
    found = grabcut_from_point(image, (90, 60))
    assert (found & small_disc).sum() / (found | small_disc).sum() > 0.9
    # ...and cannot see past itself: it is a baseline, not a method.
    image, disc = _disc_scene()
    assert not grabcut_from_point(image, (90, 60))[~disc].any()


def test_baselines_score_real_objects(shared_data):
    dataset = shared_dataset("pennfudan", "eval", shared_data)
    scores = baseline_scores(dataset, limit=2)
    assert 0.3 < scores["GrabCut box"] <= 1  # pedestrians from their boxes: far better than chance
    assert 0 < scores["GrabCut point"] < scores["GrabCut box"]
    assert 0 < scores["random walker point"] <= 1


def test_corrective_point_goes_to_the_middle_of_the_largest_error():
    truth = np.zeros((60, 80), dtype=bool)
    truth[10:50, 10:70] = True
    assert corrective_point(truth, truth) is None
    predicted = truth.copy()
    predicted[20:41, 40:61] = False  # a 21 x 21 miss centred on (50, 30)
    predicted[0:3, 0:3] = True  # a small spurious blob
    assert corrective_point(predicted, truth) == (50, 30, 1)
    predicted = truth.copy()
    predicted[52:60, 0:80] = True  # spurious band below the object: larger than any miss
    x, y, label = corrective_point(predicted, truth)
    assert label == 0 and 52 <= y < 60 and not truth[y, x]


def test_interactive_curve_starts_at_the_confident_one_point_score(shared_data, monkeypatch):
    predictor = segany.SamPredictor(segany.load_model("default"))
    dataset = shared_dataset("pennfudan", "eval", shared_data)
    calls = []
    predict = predictor.predict

    def record(point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output=True):
        calls.append((0 if point_coords is None else len(point_coords), mask_input is not None, multimask_output))
        return predict(point_coords, point_labels, box=box, mask_input=mask_input, multimask_output=multimask_output)

    once = prompt_scores(predictor, dataset, limit=1)
    assert once.interactive == [once.confident]
    monkeypatch.setattr(predictor, "predict", record)
    scores = prompt_scores(predictor, dataset, clicks=4, limit=1)
    assert (scores.confident, scores.oracle, scores.single, scores.box) == (once.confident, once.oracle, once.single,
                                                                           once.box)
    assert len(scores.interactive) == 4 and all(0 <= v <= 1 for v in scores.interactive)
    assert scores.interactive[0] == scores.confident
    corrections = [call for call in calls if call[0] > 1]  # the center point, the box and the single mask aside
    assert len(calls) - len(corrections) == 3 * scores.objects
    assert corrections and all(has_mask and not multimask for _, has_mask, multimask in corrections)
    assert len(corrections) <= 3 * scores.objects


def test_random_first_points_are_inside_and_repeatable(shared_data):
    sample = shared_dataset("pennfudan", "eval", shared_data)[0]
    truths = [m for m in sample.masks if m.any()]
    points = first_points(sample, truths, "random")
    assert points == first_points(sample, truths, "random")  # the same for every run and method
    assert all(truth[y, x] for truth, (x, y) in zip(truths, points))
    assert points != first_points(sample, truths, "center")
    predictor = segany.SamPredictor(segany.random_model(MICRO, seed=2))
    scores = image_prompt_scores(predictor, sample, first_point="random")
    assert len(scores["confident"]) == len(truths)
