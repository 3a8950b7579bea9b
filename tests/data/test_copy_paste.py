import numpy as np
import pytest

from segany.data.copy_paste import MAX_UPSCALE, MIN_DONOR_PIXELS, paste_objects, whole_objects

RED, BLUE = (255, 0, 0), (0, 0, 255)


def donor_with_squares(sides, size=200):
    """A blue image with red squares of the given sides on a diagonal, and their masks."""
    image = np.zeros((size, size, 3), np.uint8)
    image[:] = BLUE
    masks = np.zeros((len(sides), size, size), bool)
    corner = 2
    for k, side in enumerate(sides):
        masks[k, corner : corner + side, corner : corner + side] = True
        image[masks[k]] = RED
        corner += side + 2
    return image, masks


def target(height=120, width=160):
    """A grey image whose two masks split it into left and right halves."""
    image = np.full((height, width, 3), 128, np.uint8)
    masks = np.zeros((2, height, width), bool)
    masks[0, :, : width // 2] = True
    masks[1, :, width // 2 :] = True
    return image, masks


def test_pasted_objects_cover_their_pixels_and_what_they_hide():
    image, masks = target()
    donor_image, donor_masks = donor_with_squares([30, 40, 50])
    for seed in range(20):
        out, out_masks = paste_objects(image, masks, donor_image, donor_masks, 3, np.random.default_rng(seed))
        assert out.shape == image.shape and out_masks.shape[1:] == masks.shape[1:]
        assert image[0, 0, 0] == 128  # the input is not changed in place
        pasted = out_masks[len(masks) :]
        assert len(pasted) == 3 and pasted[-1].any()  # an earlier one may lie wholly under a later one
        union = pasted.any(axis=0)
        # Each pasted pixel shows the donor object (red), every other pixel is as it was.
        assert (out[union] == RED).all()
        assert (out[~union] == 128).all()
        # The image's own masks lose exactly what the pasted objects cover...
        np.testing.assert_array_equal(out_masks[: len(masks)], masks & ~union)
        # ... and later pasted objects hide earlier ones: no pixel belongs to two of them.
        assert pasted.sum(axis=0).max() == 1


def test_pasted_objects_fit_the_image_and_are_not_blown_up():
    image, masks = target(60, 300)
    donor_image, donor_masks = donor_with_squares([20, 150])
    for seed in range(30):
        _, out_masks = paste_objects(image, masks, donor_image, donor_masks, 2, np.random.default_rng(seed))
        for mask in out_masks[len(masks) :]:
            if not mask.any():  # under the other one
                continue
            ys, xs = np.nonzero(mask)
            # squares stay squares: at most 60 high (the image), so at most 60 wide
            assert ys.max() - ys.min() + 1 <= 60 and xs.max() - xs.min() + 1 <= 60


def test_sizes_are_drawn_over_a_wide_range():
    image, masks = target(400, 400)
    donor_image, donor_masks = donor_with_squares([120])
    sides = [np.sqrt(paste_objects(image, masks, donor_image, donor_masks, 1, np.random.default_rng(seed))[1][-1].sum())
             for seed in range(200)]
    # log-uniform over 3% to 50% of the long side (12 to 200 pixels), capped at 1.5 x 120
    assert min(sides) < 20 and 150 < max(sides) <= MAX_UPSCALE * 120 + 1
    assert np.median(sides) < 80


def test_only_whole_objects_of_some_size_are_pasted():
    donor_image, donor_masks = donor_with_squares([30, 5, 30])
    donor_masks[2] = False
    donor_masks[2, -20:, 50:80] = True  # touches the bottom border
    assert MIN_DONOR_PIXELS > 25
    np.testing.assert_array_equal(whole_objects(donor_masks), [0])
    image, masks = target()
    out, out_masks = paste_objects(image, masks, donor_image, donor_masks[1:], 3, np.random.default_rng(0))
    assert out is image and out_masks is masks  # nothing to paste: unchanged


@pytest.mark.parametrize("count", [0, 1, 5])
def test_count_is_an_upper_bound(count):
    image, masks = target()
    donor_image, donor_masks = donor_with_squares([30, 40])
    _, out_masks = paste_objects(image, masks, donor_image, donor_masks, count, np.random.default_rng(1))
    assert len(out_masks) == len(masks) + min(count, 2)
