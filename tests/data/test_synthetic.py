import numpy as np

from segany.data import shared_dataset
from segany.data.synthetic import SyntheticScenes, scene_levels


def test_scenes_are_reproducible_and_well_formed():
    scenes = SyntheticScenes(count=30, size=128, seed=7)
    for i in range(len(scenes)):
        sample = scenes[i]
        assert sample.image.shape == (128, 128, 3) and sample.image.dtype == np.uint8
        assert sample.masks.dtype == bool and sample.masks.shape[1:] == (128, 128)
        assert (sample.masks.reshape(len(sample.masks), -1).sum(axis=1) >= 16).all()
    again = SyntheticScenes(count=30, size=128, seed=7)[5]
    np.testing.assert_array_equal(again.image, scenes[5].image)
    np.testing.assert_array_equal(again.masks, scenes[5].masks)
    assert not np.array_equal(SyntheticScenes(count=30, size=128, seed=8)[5].image, scenes[5].image)


def test_scenes_nest_three_levels_for_ambiguous_points():
    scenes = SyntheticScenes(count=40, size=128, seed=0)
    nested = three_levels = 0
    for i in range(len(scenes)):
        pairs = set(scene_levels(scenes[i]))
        nested += bool(pairs)
        # a chain whole > part > subpart: a point on the subpart has three right answers
        three_levels += any((b, c) in pairs for _, b in pairs for c in range(len(scenes[i].masks)))
    assert nested >= 36 and three_levels >= 20


def test_synthetic_is_a_named_dataset_with_a_separate_eval_split():
    train, evaluation = shared_dataset("synthetic", "train", "unused"), shared_dataset("synthetic", "eval", "unused")
    assert len(evaluation) == 100 and len(train) > len(evaluation)
    assert not np.array_equal(train[0].image, evaluation[0].image)
