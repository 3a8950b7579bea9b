import numpy as np

import segany
from conftest import MICRO
from segany.data import shared_dataset
from segany.eval import center_point, single_point_scores


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


def test_single_point_scores_are_ious(shared_data):
    predictor = segany.SamPredictor(segany.random_model(MICRO, seed=2))
    dataset = shared_dataset("pennfudan", "eval", shared_data)
    scores = single_point_scores(predictor, dataset, limit=2)
    assert scores.objects == sum(len(dataset[i].masks) for i in range(2))
    assert 0 <= scores.confident <= scores.oracle <= 1 and 0 <= scores.single <= 1
