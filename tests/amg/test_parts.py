"""The generator's parts against the official `segment_anything.utils.amg` on real masks."""

import numpy as np
import pytest
import torch
from PIL import Image

from segany.amg import stability_score
from segany.amg.boxes import is_box_near_crop_edge, masks_to_boxes, nms
from segany.amg.grid import build_layer_point_grids, generate_crop_boxes
from segany.amg.regions import fill_small_regions, remove_small_regions
from segany.masks import mask_to_uncompressed_rle, masks_to_rles, region_to_rle, rle_ious, rle_to_mask
from segany.testing import official as reference


@pytest.fixture(scope="module")
def amg():
    reference.import_official()
    from segment_anything.utils import amg

    return amg


@pytest.fixture(scope="module")
def person_masks(shared_data):
    """Instance masks of three PennFudan images, padded to one size: (N, H, W) bool."""
    names = ["FudanPed00001", "FudanPed00002", "PennPed00010"]
    maps = [np.asarray(Image.open(shared_data / "pennfudan" / "PedMasks" / f"{n}_mask.png")) for n in names]
    h, w = max(m.shape[0] for m in maps), max(m.shape[1] for m in maps)
    masks = [np.pad(m, ((0, h - m.shape[0]), (0, w - m.shape[1]))) == k for m in maps for k in np.unique(m)[1:]]
    return np.stack(masks)


@pytest.mark.parametrize("per_side,layers,factor", [(32, 0, 1), (16, 2, 2), (10, 1, 1)])
def test_point_grids_match(amg, per_side, layers, factor):
    ours = build_layer_point_grids(per_side, layers, factor)
    theirs = amg.build_all_layer_point_grids(per_side, layers, factor)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("size", [(1200, 1800), (534, 800), (481, 321), (100, 100)])
@pytest.mark.parametrize("layers", [0, 1, 2])
def test_crop_boxes_match(amg, size, layers):
    assert generate_crop_boxes(size, layers, 512 / 1500) == amg.generate_crop_boxes(size, layers, 512 / 1500)


def test_boxes_of_masks_match(amg, person_masks):
    masks = torch.from_numpy(person_masks)
    with_empty = torch.cat([masks, torch.zeros_like(masks[:1])])
    assert torch.equal(masks_to_boxes(with_empty), amg.batched_mask_to_box(with_empty))


def test_crop_edge_test_matches(amg, person_masks):
    boxes = masks_to_boxes(torch.from_numpy(person_masks))
    h, w = person_masks.shape[1:]
    for crop in ([0, 0, w, h], [0, 0, w // 2, h], [w // 3, h // 4, w, h]):
        assert torch.equal(is_box_near_crop_edge(boxes, crop, [0, 0, w, h]),
                           amg.is_box_near_crop_edge(boxes, crop, [0, 0, w, h]))


def test_stability_score_matches(amg, person_masks):
    # Smooth logits from real masks: a blurred signed mask.
    signed = torch.from_numpy(person_masks).float() * 2 - 1
    logits = torch.nn.functional.avg_pool2d(signed[:, None], 9, stride=1, padding=4)[:, 0] * 5
    for offset in (1.0, 0.3):
        torch.testing.assert_close(stability_score(logits, 0.0, offset),
                                   amg.calculate_stability_score(logits, 0.0, offset), rtol=0, atol=0)


def test_nms_matches_the_reference(person_masks):
    rng = np.random.default_rng(0)
    base = masks_to_boxes(torch.from_numpy(person_masks)).float()
    jitter = torch.as_tensor(rng.integers(-15, 16, size=(40, len(base), 4)), dtype=torch.float)
    boxes = (base[None] + jitter).reshape(-1, 4)
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    scores = torch.as_tensor(rng.integers(0, 5, size=len(boxes)), dtype=torch.float)  # many ties
    for threshold in (0.3, 0.7, 0.9):
        kept = nms(boxes, scores, threshold)
        assert torch.equal(kept, reference._batched_nms(boxes, scores, torch.zeros(len(boxes)), threshold))
        assert 0 < len(kept) < len(boxes)


@pytest.mark.parametrize("mode", ["holes", "islands"])
def test_small_regions_match(amg, person_masks, mode):
    rng = np.random.default_rng(1)
    for mask in person_masks:
        noisy = mask ^ (rng.random(mask.shape) < 0.002)  # specks: islands outside, holes inside
        for area in (1, 20, 5000):
            got, changed = remove_small_regions(noisy, area, mode)
            want, want_changed = amg.remove_small_regions(noisy, area, mode)
            assert changed == want_changed
            np.testing.assert_array_equal(got, want)


def test_rle_encodings_match(amg, person_masks):
    masks = torch.from_numpy(person_masks)
    uncompressed = amg.mask_to_rle_pytorch(masks)
    assert masks_to_rles(person_masks) == [amg.coco_encode_rle(rle) for rle in uncompressed]
    assert [mask_to_uncompressed_rle(m) for m in person_masks] == uncompressed
    for mask, rle in zip(person_masks, uncompressed):
        np.testing.assert_array_equal(rle_to_mask(rle), mask)


def test_rle_ious_equal_pixel_counts_in_either_encoding(person_masks):
    def counted(masks, others):
        return [[(a & b).sum() / (a | b).sum() for b in others] for a in masks]

    shifted = np.roll(person_masks, 7, axis=2)
    compressed = masks_to_rles(person_masks)
    np.testing.assert_allclose(rle_ious(masks_to_rles(shifted), compressed), counted(shifted, person_masks), atol=1e-12)
    uncompressed = [mask_to_uncompressed_rle(m) for m in person_masks[:2]]
    np.testing.assert_allclose(rle_ious(uncompressed, compressed), counted(person_masks[:2], person_masks), atol=1e-12)
    assert rle_ious(compressed, []).shape == (len(person_masks), 0)


def test_rle_of_a_region_equals_rle_of_the_whole_mask(person_masks):
    mask = person_masks[0]
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    placements = [(ys.min(), ys.max() + 1, xs.min(), xs.max() + 1), (0, h, 0, w), (0, h, xs.min(), w),
                  (ys.min() - 3, ys.max() + 5, 0, xs.max() + 2), (5, 9, 7, 7)]  # tight, whole, wide, an empty one
    for y0, y1, x0, x1 in placements:
        region = mask[y0:y1, x0:x1]
        whole = np.zeros_like(mask)
        whole[y0:y1, x0:x1] = region
        assert region_to_rle(region, y0, x0, h, w) == masks_to_rles(whole[None])[0]
    corner = np.ones((3, 4), dtype=bool)  # a region that touches the last column and row
    whole = np.zeros((10, 12), dtype=bool)
    whole[7:, 8:] = True
    assert region_to_rle(corner, 7, 8, 10, 12) == masks_to_rles(whole[None])[0]


def test_fill_small_regions_fills_holes_and_drops_sprinkles_by_8_connected_area():
    logits = torch.full((1, 2, 20, 20), -5.0)
    logits[0, 0, 2:12, 2:12] = 5.0  # a square with a 2-pixel hole and a 9-pixel hole
    logits[0, 0, 4, 4] = logits[0, 0, 5, 5] = -1.0  # diagonal neighbours: one region of 2
    logits[0, 0, 7:10, 7:10] = -1.0
    logits[0, 1, 15, 15] = logits[0, 1, 16, 16] = 3.0  # a 2-pixel sprinkle on its own
    cleaned = fill_small_regions(logits, 0.0, max_hole_area=2, max_sprinkle_area=2)
    assert cleaned[0, 0, 4, 4] == cleaned[0, 0, 5, 5] == 10.0
    assert (cleaned[0, 0, 7:10, 7:10] == -1.0).all()
    assert (cleaned[0, 1, 15:17, 15:17] <= 0).all() and cleaned[0, 1, 15, 15] == -10.0
    assert (cleaned[0, 0, 2:12, 2:12] > 0).sum() == 100 - 9
    assert torch.equal(fill_small_regions(logits, 0.0, 0, 0), logits)
    assert logits[0, 0, 4, 4] == -1.0  # the input is left as it was
