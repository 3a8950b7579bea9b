import numpy as np
import pytest

from segany.train import sample_correction_point, sample_first_prompt


@pytest.fixture
def mask():
    mask = np.zeros((120, 160), dtype=bool)
    mask[30:90, 40:100] = True
    mask[50:60, 60:70] = False  # a hole
    return mask


def test_first_prompts_are_inside_points_or_noisy_boxes_half_and_half(mask):
    rng = np.random.default_rng(0)
    prompts = [sample_first_prompt(mask, rng) for _ in range(400)]
    points = [p for p in prompts if p.box is None]
    boxes = [p.box for p in prompts if p.box is not None]
    assert 150 < len(points) < 250
    for prompt in points:
        (x, y), = prompt.points
        assert mask[int(y), int(x)] and prompt.labels.tolist() == [1]
    boxes = np.array(boxes)
    offsets = boxes - [40, 30, 100, 90]
    assert np.abs(offsets).max() <= 20  # noise is capped at 20 px
    assert 3 < offsets.std(axis=0).min() and offsets.std(axis=0).max() < 7  # std 10% of 60 px, clipped
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


def test_correction_points_fall_in_the_error_region_with_its_label(mask):
    rng = np.random.default_rng(1)
    predicted = mask.copy()
    predicted[30:90, 40:70] = False  # false negatives on the left half
    predicted[0:10, 0:10] = True  # a false positive in the corner
    labels = []
    for _ in range(300):
        x, y, label = sample_correction_point(predicted, mask, rng)
        assert predicted[int(y), int(x)] != mask[int(y), int(x)]
        assert label == int(mask[int(y), int(x)])
        labels.append(label)
    errors_fn = (mask & ~predicted).sum()
    errors_fp = (predicted & ~mask).sum()
    assert abs(np.mean(labels) - errors_fn / (errors_fn + errors_fp)) < 0.08  # uniform over the region
    assert sample_correction_point(mask, mask, rng) is None


def test_empty_masks_cannot_be_prompted():
    with pytest.raises(ValueError, match="empty mask"):
        sample_first_prompt(np.zeros((5, 5), dtype=bool), np.random.default_rng(0))
