import numpy as np

import segany
from conftest import MICRO
from segany.data import shared_dataset
from segany.eval import center_point, grabcut_box_miou, grabcut_from_box, prompt_scores, tight_box


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


def _disc_scene():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (120, 160, 3)).astype(np.uint8)  # dark noise
    yy, xx = np.mgrid[:120, :160]
    disc = (xx - 90) ** 2 + (yy - 60) ** 2 < 30**2
    image[disc] = (230, 200, 40)
    return image, disc


def test_grabcut_finds_a_distinct_object_in_its_box():
    image, disc = _disc_scene()
    box = tight_box(disc) + [-6, -6, 6, 6]
    found = grabcut_from_box(image, box)
    assert (found & disc).sum() / (found | disc).sum() > 0.95
    whole = grabcut_from_box(image, np.array([0, 0, 160, 120]))  # nothing outside: the box itself
    assert whole.all()


def test_grabcut_baseline_scores_real_objects(shared_data):
    dataset = shared_dataset("pennfudan", "eval", shared_data)
    miou = grabcut_box_miou(dataset, limit=2)
    assert 0.3 < miou <= 1  # pedestrians from their boxes: far better than chance
