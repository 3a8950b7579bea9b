"""segany's automatic mask generator against the official one, with the same weights.

Random weights give masks that cover the whole image and fail the default filters, so most
checks replace the network, on both sides alike, by a field of blobs: for each grid point,
three discs of growing radius around it, roughened by the image embedding, with predicted
IoUs spread around the default threshold. Hundreds of masks of many sizes then go through
every stage (IoU and stability filters, NMS, crop-edge filter, crops, small-region removal)
and both generators must return the same records. The official generator's NMS is a faithful
stand-in for torchvision's (see `segany.testing.official`), as torchvision cannot be installed
beside the CPU build of torch here.
"""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import segany
from segany.masks import rle_to_mask
from segany.testing import official as reference
from conftest import FAMILY_MODELS, MICRO, SMALL_VIT_B, load_rgb

RADII = (0.04, 0.1, 0.22)  # disc radii as a fraction of the low-res grid side


def blob_logits(predictor, coords: torch.Tensor):
    """(B, 1, 2) points in the resized frame -> low-res logits (B, 3, L, L) and IoU (B, 3)."""
    size = predictor.model.image_encoder.img_size
    low_res = predictor.model.prompt_encoder.mask_input_size[0]
    texture = F.interpolate(predictor.features[:, :1], (low_res, low_res), mode="bilinear", align_corners=False)
    texture = texture[0, 0] / predictor.features[:, :1].std()
    centres = coords[:, 0].float() * (low_res / size)  # B, 2 (x, y) in low-res cells
    grid = torch.arange(low_res, dtype=torch.float) + 0.5
    x, y = centres[:, 0, None, None], centres[:, 1, None, None]
    distance = torch.hypot(grid[None, None, :] - x, grid[None, :, None] - y)  # B, L, L
    radii = torch.tensor(RADII) * low_res
    logits = 8.0 * (radii[None, :, None, None] - distance[:, None]) + 3.0 * texture
    phase = coords[:, 0, 0].float() * 12.9898 + coords[:, 0, 1].float() * 78.233
    iou = 0.8 + 0.19 * torch.sin(phase[:, None] + torch.arange(3.0)).abs()
    return logits, iou


def use_blob_field(ours, official) -> None:
    def ours_low_res(coords, labels, boxes=None, mask_input=None, multimask_output=True, iou_threshold=None):
        return blob_logits(ours.predictor, coords)

    def official_predict(coords, labels, boxes=None, mask_input=None, multimask_output=True, return_logits=False):
        p = official.predictor
        low_res, iou = blob_logits(p, coords)
        masks = p.model.postprocess_masks(low_res, p.input_size, p.original_size)
        return (masks if return_logits else masks > p.model.mask_threshold), iou, low_res

    ours.predictor.predict_low_res_torch = ours_low_res
    official.predictor.predict_torch = official_predict


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return reference.write_reference_checkpoint(MICRO, tmp_path_factory.mktemp("amg") / "micro.pth", seed=5)


def generators(weights, config=MICRO, **params):
    """(ours, the reference package's) generators on the same weights of `config`'s family."""
    package = reference.import_reference(reference.REFERENCES[config.family])
    return (segany.SamAutomaticMaskGenerator(segany.load_model(weights), **params),
            package.SamAutomaticMaskGenerator(reference.load_reference(config, weights), **params))


def assert_same_records(ours, theirs):
    """Same number of masks, each official one matched (same point within 1e-4 pixels: SAM 2 keeps
    them in float32; IoU > 0.99, predicted IoU within 1e-4, stability within 1e-4 or 3 pixels of
    the mask)."""
    assert len(ours) == len(theirs)
    unmatched = list(range(len(theirs)))
    for record in ours:
        mask = rle_to_mask(record["segmentation"])
        for j in unmatched:
            other = theirs[j]
            if not np.allclose(other["point_coords"], record["point_coords"], rtol=0, atol=1e-4) or \
                    other["crop_box"] != record["crop_box"]:
                continue
            other_mask = rle_to_mask(other["segmentation"])
            if (mask & other_mask).sum() / max((mask | other_mask).sum(), 1) > 0.99:
                break
        else:
            raise AssertionError(f"no official mask matches {record['point_coords']} {record['bbox']}")
        unmatched.remove(j)
        assert record["predicted_iou"] == pytest.approx(other["predicted_iou"], abs=1e-4)
        # A pixel whose logit lies within float32 rounding of +-offset may fall either side of it
        # (other CPUs, other summation orders): a few pixels' worth of the mask.
        assert record["stability_score"] == pytest.approx(other["stability_score"], abs=max(1e-4, 3 / record["area"]))
        assert record["area"] == pytest.approx(other["area"], rel=0.01)
        assert np.allclose(record["bbox"], other["bbox"], atol=2)


CASES = {
    "defaults": dict(points_per_side=16),
    "crops": dict(points_per_side=12, crop_n_layers=1, crop_n_points_downscale_factor=2),
    "small regions": dict(points_per_side=12, min_mask_region_area=300, pred_iou_thresh=0.8),
    "loose": dict(points_per_side=12, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.9),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("photo", ["examples/groceries.jpg", "bsds500/images/val/101085.jpg"])
def test_same_masks_as_official_through_every_stage(shared_data, weights, case, photo):
    image = load_rgb(shared_data / photo)
    ours, theirs = generators(weights, output_mode="coco_rle", **CASES[case])
    use_blob_field(ours, theirs)
    got, want = ours.generate(image), theirs.generate(image)
    assert len(want) >= 20  # the case really exercises the stages
    assert_same_records(got, want)


def test_same_masks_as_official_with_the_real_network(shared_data, weights):
    """Random weights end to end, with filters loosened so that masks come through."""
    image = load_rgb(shared_data / "examples/groceries.jpg")
    params = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, stability_score_offset=0.02,
                  output_mode="coco_rle")
    ours, theirs = generators(weights, **params)
    got, want = ours.generate(image), theirs.generate(image)
    assert len(want) >= 1
    assert_same_records(got, want)


def test_same_masks_as_official_with_the_real_network_and_iou_filter(shared_data, tmp_path):
    """Official widths; an IoU threshold half the masks pass, so the decoder skips some prompts' masks."""
    state_dict = reference.random_reference_state_dict(SMALL_VIT_B)
    # Random weights predict IoUs around -0.17: shift them so that the threshold splits them.
    state_dict["mask_decoder.iou_prediction_head.layers.2.bias"] += 0.17
    torch.save(state_dict, tmp_path / "shifted.pth")
    image = load_rgb(shared_data / "bsds500/images/val/101085.jpg")
    params = dict(points_per_side=8, pred_iou_thresh=0.01, stability_score_thresh=0.0, stability_score_offset=0.05,
                  box_nms_thresh=0.95, output_mode="coco_rle")
    ours, theirs = generators(tmp_path / "shifted.pth", SMALL_VIT_B, **params)
    got, want = ours.generate(image), theirs.generate(image)
    assert len(want) >= 1
    assert_same_records(got, want)


@pytest.mark.parametrize("model", ["mobile_sam", "sam_hq"])
def test_same_masks_as_reference_for_the_other_families(shared_data, family_checkpoint, tmp_path, model):
    """MobileSAM and SAM-HQ (one mask per point) end to end, with a crop layer and a predicted-IoU
    threshold that about half of this image's masks pass (the IoU head shifted to straddle it)."""
    config = FAMILY_MODELS[model]
    image = load_rgb(shared_data / "bsds500/images/val/101085.jpg")
    predictor = segany.SamPredictor(segany.load_model(family_checkpoint(model)))
    predictor.set_image(image)
    h, w = image.shape[:2]
    grid = np.stack(np.meshgrid(np.linspace(0.1, 0.9, 5) * w, np.linspace(0.1, 0.9, 5) * h), axis=-1)
    _, scores, _ = predictor.predict_batch(point_coords=grid.reshape(-1, 1, 2), point_labels=np.ones((25, 1)))
    state_dict = torch.load(family_checkpoint(model), weights_only=True)
    state_dict["mask_decoder.iou_prediction_head.layers.2.bias"] += 0.5 - float(np.median(scores))
    weights = tmp_path / "shifted.pth"
    torch.save(state_dict, weights)
    params = dict(points_per_side=4, pred_iou_thresh=0.5, stability_score_thresh=0.0, stability_score_offset=0.05,
                  box_nms_thresh=1.0, crop_nms_thresh=1.0, crop_n_layers=1, output_mode="coco_rle")
    ours, theirs = generators(weights, config, **params)
    got, want = ours.generate(image), theirs.generate(image)
    assert len(want) >= 5
    assert_same_records(got, want)
    # The whole image's embedding and high-res features, computed before, give the same records.
    shifted = segany.SamPredictor(ours.predictor.model)
    shifted.set_image(image)
    assert ours.generate(image, shifted.get_image_embedding(), shifted.get_high_res_features()) == got


def test_output_modes_hold_the_same_masks_in_the_official_forms(shared_data, weights):
    image = load_rgb(shared_data / "bsds500/images/val/101085.jpg")
    results = {}
    for mode in ("binary_mask", "uncompressed_rle", "coco_rle"):
        ours, theirs = generators(weights, output_mode=mode, points_per_side=8)
        use_blob_field(ours, theirs)
        results[mode] = ours.generate(image), theirs.generate(image)
    reference_masks = [rle_to_mask(r["segmentation"]) for r in results["coco_rle"][0]]
    assert len(reference_masks) > 0
    for mode, (got, want) in results.items():
        assert [sorted(r) for r in got] == [sorted(r) for r in want]
        for record, official_record, mask in zip(got, want, reference_masks):
            segmentation = record["segmentation"]
            assert type(segmentation) is type(official_record["segmentation"])
            if mode == "binary_mask":
                assert segmentation.dtype == bool and segmentation.shape == image.shape[:2]
                np.testing.assert_array_equal(segmentation, mask)
            else:
                assert sorted(segmentation) == sorted(official_record["segmentation"]) == ["counts", "size"]
                np.testing.assert_array_equal(rle_to_mask(segmentation), mask)
