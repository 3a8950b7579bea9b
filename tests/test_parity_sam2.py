"""segany's SAM 2 API (`segany.sam2`) against `sam2==1.1.0` with the same weights, on real photos.

Both sides load one SAM 2.1-layout checkpoint of the full hiera_t architecture (random weights
with noise on every tensor, video modules included). Features, low-res logits, masks, IoU
predictions and object scores must agree within 1e-4 (fp32). SAM 2 imports torchvision and
calls a compiled extension for its mask clean-up; both get the stand-ins of
`segany.testing.official`.
"""

import numpy as np
import pytest
import torch

import segany
from segany.sam2 import SAM2ImagePredictor, build_sam2, sam2_config_name
from segany.testing import official as reference
from conftest import FAMILY_MODELS, load_rgb, parity_prompts

ATOL = 1e-4
CONFIG_FILE = "configs/sam2.1/sam2.1_hiera_t.yaml"
PHOTOS = ["examples/truck.jpg", "examples/groceries.jpg", "bsds500/images/val/101085.jpg"]


@pytest.fixture(scope="module")
def checkpoint(family_checkpoint):
    return family_checkpoint("sam2")


@pytest.fixture(scope="module")
def models(checkpoint):
    """(ours, the reference's) model, each built by its own build_sam2."""
    build = reference.import_reference("sam2.build_sam").build_sam2
    return (build_sam2(CONFIG_FILE, checkpoint, device="cpu"),
            build(CONFIG_FILE, str(checkpoint), device="cpu"))


def reference_predictor(model, **kwargs):
    return reference.import_reference("sam2.sam2_image_predictor").SAM2ImagePredictor(model, **kwargs)


@pytest.fixture(scope="module", params=PHOTOS, ids=lambda photo: photo.split("/")[-1])
def predictors(request, shared_data, models):
    ours, theirs = SAM2ImagePredictor(models[0]), reference_predictor(models[1])
    image = load_rgb(shared_data / request.param)
    ours.set_image(image)
    theirs.set_image(image)
    return ours, theirs


def assert_same(got, want):
    """Outputs of predict: all within ATOL, but thresholded masks (0/1), where pixels whose
    logit is within rounding of the threshold may flip: then at most 1e-5 of them."""
    assert len(got) == len(want)
    for index, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and a.dtype == b.dtype
        if index == 0 and np.isin(b, (0, 1)).all():
            assert (a != b).mean() < 1e-5
        else:
            np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)


def test_features_match(predictors):
    ours, theirs = predictors
    assert ours._orig_hw == [tuple(hw) for hw in theirs._orig_hw]
    torch.testing.assert_close(ours.get_image_embedding(), theirs.get_image_embedding(), rtol=0, atol=ATOL)
    got, want = ours._features["high_res_feats"], theirs._features["high_res_feats"]
    assert [tuple(f.shape) for f in got] == [tuple(f.shape) for f in want] == [(1, 32, 256, 256), (1, 64, 128, 128)]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=ATOL)


def _prompts(h, w):
    """`parity_prompts` and the sam2 predictor's own: normalized coordinates, batched prompts."""
    prompts = parity_prompts(h, w)
    points, box = prompts["pos_neg_points"]["point_coords"], prompts["box"]["box"]
    return {
        **prompts,
        "normalized_points": dict(point_coords=points[:2] / [w, h], point_labels=np.array([1, 1]),
                                  normalize_coords=False),
        "batched_boxes": dict(box=np.stack([box, box * 0.5, box * [1, 1, 1.2, 1.1]])),
        "batched_points": dict(point_coords=points[:, None], point_labels=np.array([[1], [1], [0]])),
    }


@pytest.mark.parametrize("prompt", list(_prompts(1, 1)))
@pytest.mark.parametrize("multimask", [True, False])
def test_predict_matches(predictors, prompt, multimask):
    """multimask off also exercises SAM 2's fallback to the most stable of the three masks."""
    ours, theirs = predictors
    kwargs = _prompts(*ours._orig_hw[0])[prompt]
    for return_logits in (True, False):
        assert_same(ours.predict(**kwargs, multimask_output=multimask, return_logits=return_logits),
                    theirs.predict(**kwargs, multimask_output=multimask, return_logits=return_logits))


def test_mask_input_matches(predictors):
    ours, theirs = predictors
    kwargs = _prompts(*ours._orig_hw[0])["pos_neg_points"]
    _, scores, low_res = theirs.predict(**kwargs)
    previous = low_res[np.argmax(scores)][None]
    assert_same(ours.predict(**kwargs, mask_input=previous, multimask_output=False, return_logits=True),
                theirs.predict(**kwargs, mask_input=previous, multimask_output=False, return_logits=True))


def test_object_scores_match(predictors, monkeypatch):
    """The object-score logits SAM 2's decoder computes (its predictor drops them)."""
    ours, theirs = predictors
    decoder = theirs.model.sam_mask_decoder
    forward, seen = decoder.forward, []
    monkeypatch.setattr(decoder, "forward", lambda *a, **k: seen.append(forward(*a, **k)) or seen[-1])
    for kwargs in _prompts(*ours._orig_hw[0]).values():
        *_, object_scores = ours.predict(**kwargs, return_object_scores=True)
        theirs.predict(**kwargs)
        want = seen[-1][3].squeeze(0).numpy()
        assert object_scores.shape == want.shape
        np.testing.assert_allclose(object_scores, want, rtol=0, atol=ATOL)


def test_hole_and_sprinkle_clean_up_matches(shared_data, models):
    """SAM 2's clean-up of the low-res logits before upscaling, with areas that change masks."""
    image = load_rgb(shared_data / "examples/groceries.jpg")
    h, w = image.shape[:2]
    plain = SAM2ImagePredictor(models[0])
    plain.set_image(image)
    kwargs = _prompts(h, w)["batched_boxes"]
    masks, _, _ = plain.predict(**kwargs)
    for area in (10, 400):
        ours = SAM2ImagePredictor(models[0], max_hole_area=area, max_sprinkle_area=area)
        theirs = reference_predictor(models[1], max_hole_area=area, max_sprinkle_area=area)
        ours.set_image(image)
        theirs.set_image(image)
        got = ours.predict(**kwargs)
        assert (got[0] != masks).any()
        assert_same(got, theirs.predict(**kwargs))


def test_image_batch_matches(shared_data, models):
    images = [load_rgb(shared_data / photo) for photo in PHOTOS[1:]]
    ours, theirs = SAM2ImagePredictor(models[0]), reference_predictor(models[1])
    ours.set_image_batch(images)
    theirs.set_image_batch(images)
    torch.testing.assert_close(ours.get_image_embedding(), theirs.get_image_embedding(), rtol=0, atol=ATOL)
    prompts = [_prompts(*image.shape[:2]) for image in images]
    for names in (("box", "box"), ("pos_neg_points", "box_and_points"), ("batched_boxes", "batched_boxes")):
        chosen = [p[n] for p, n in zip(prompts, names)]
        batch = {f"{key}_batch": [c.get(key) for c in chosen] for key in ("point_coords", "point_labels", "box")}
        batch = {key: None if all(v is None for v in values) else values for key, values in batch.items()}
        got, want = ours.predict_batch(**batch), theirs.predict_batch(**batch)
        for ours_image, theirs_image in zip(zip(*got), zip(*want)):
            assert_same(ours_image, theirs_image)
    # predict() after a batch answers for the last image, as SAM 2's does.
    assert_same(ours.predict(**prompts[-1]["box"]), theirs.predict(**prompts[-1]["box"]))
    with pytest.raises(segany.SegAnyError, match="box_batch has 1 entries for 2 images"):
        ours.predict_batch(box_batch=[prompts[0]["box"]["box"]])


def test_segany_predictor_gives_the_same_masks(predictors):
    """`segany.SamPredictor` on a SAM 2 model: the same features and predictions (boolean masks)."""
    ours, theirs = predictors
    predictor = ours.predictor
    torch.testing.assert_close(predictor.get_image_embedding(), theirs.get_image_embedding(), rtol=0, atol=ATOL)
    kwargs = _prompts(*ours._orig_hw[0])["box_and_points"]
    masks, scores, low_res = predictor.predict(**kwargs)
    want_masks, want_scores, want_low_res = theirs.predict(**kwargs)
    assert masks.dtype == np.bool_ and (masks != want_masks.astype(bool)).mean() < 1e-5
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=ATOL)
    np.testing.assert_allclose(low_res.clip(-32, 32), want_low_res, rtol=0, atol=ATOL)


@pytest.mark.parametrize("use_m2m", [False, True])
def test_automatic_mask_generator_matches(shared_data, models, use_m2m):
    """Records of both generators, with a predicted-IoU threshold that half the masks pass (after
    the mask-to-mask refinement with use_m2m); no NMS, as these random masks all span the image."""
    from amg.test_generator import assert_same_records

    package = reference.import_reference("sam2.automatic_mask_generator")
    image = load_rgb(shared_data / "bsds500/images/val/101085.jpg")
    params = dict(points_per_side=6, stability_score_thresh=0.0, stability_score_offset=0.05, box_nms_thresh=1.0,
                  output_mode="coco_rle", use_m2m=use_m2m)
    unfiltered = segany.SAM2AutomaticMaskGenerator(models[0], pred_iou_thresh=0.0, **params).generate(image)
    params["pred_iou_thresh"] = float(np.median([record["predicted_iou"] for record in unfiltered]))
    got = segany.SAM2AutomaticMaskGenerator(models[0], **params).generate(image)
    want = package.SAM2AutomaticMaskGenerator(models[1], **params).generate(image)
    assert 10 <= len(want) < len(unfiltered)
    assert_same_records(got, want)


def test_build_sam2_names_and_options(checkpoint):
    assert [sam2_config_name(n) for n in ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2_hiera_s.yaml",
                                          "sam2.1_hiera_b+", "configs/sam2/sam2_hiera_l.yaml")] == \
        ["hiera_t", "hiera_s", "hiera_b+", "hiera_l"]
    with pytest.raises(segany.SegAnyError, match="not a SAM 2 image model config"):
        build_sam2("configs/sam2.1/sam2.1_hiera_xl.yaml", device="cpu")
    with pytest.raises(segany.SegAnyError, match="hydra_overrides_extra"):
        build_sam2(CONFIG_FILE, device="cpu", hydra_overrides_extra=["++model.image_size=512"])
    with pytest.raises(segany.CheckpointError, match="does not fit the model"):
        build_sam2("configs/sam2.1/sam2.1_hiera_s.yaml", checkpoint, device="cpu")
    model = build_sam2(CONFIG_FILE, checkpoint, device="cpu", mode="train", apply_postprocessing=False)
    assert model.training and not model.mask_decoder.dynamic_multimask_via_stability
    assert model.config == FAMILY_MODELS["sam2"]
    random = build_sam2(CONFIG_FILE, device="cpu")
    assert not random.training and random.mask_decoder.dynamic_multimask_via_stability


def test_bad_prompts_say_what_is_wrong(predictors):
    ours, _ = predictors
    with pytest.raises(segany.SegAnyError, match="point_labels must be supplied"):
        ours.predict(point_coords=np.zeros((1, 2)))
    with pytest.raises(segany.SegAnyError, match="point_labels must have shape"):
        ours.predict(point_coords=np.zeros((2, 2)), point_labels=np.ones(3))
    with pytest.raises(segany.SegAnyError, match="box must have shape"):
        ours.predict(box=np.zeros(3))
    with pytest.raises(segany.SegAnyError, match="mask_input must have shape"):
        ours.predict(box=np.zeros(4), mask_input=np.zeros((1, 64, 64)))
    with pytest.raises(segany.SegAnyError, match="different numbers of prompts"):
        ours.predict(box=np.zeros((2, 4)), point_coords=np.zeros((3, 1, 2)), point_labels=np.ones((3, 1)))
    with pytest.raises(segany.SegAnyError, match="NaN"):
        ours.predict(box=np.array([0, 0, np.nan, 4]))
    with pytest.raises(segany.SegAnyError, match="predict_batch needs images"):
        ours.predict_batch(box_batch=[np.zeros(4)])
    with pytest.raises(RuntimeError, match="must be set"):
        SAM2ImagePredictor(ours.model).predict(box=np.zeros(4))
