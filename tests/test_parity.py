"""segany against each family's reference package with the same weights, on real photographs.

SAM against the official `segment-anything==1.0`, MobileSAM against `mobilesam-mirror==1.0.0`,
SAM-HQ against `segment-anything-hq==0.3`. Both sides load the same reference-layout checkpoint
of random weights with noise on every tensor; embeddings, the decoder's other image inputs,
low-res logits, upscaled mask logits and IoU predictions must agree within 1e-4 (fp32).
"""

import numpy as np
import pytest
import torch

from segany.testing import official as reference
import segany
from segany.predictor import PROMPTS_PER_DECODER_CALL
from conftest import FAMILY_MODELS, load_rgb, parity_prompts

ATOL = 1e-4

# (dataset-relative path, why it is here)
PHOTOS = [
    "examples/truck.jpg",  # 1800x1200 landscape
    "examples/groceries.jpg",  # 800x534, not a multiple of anything
    "bsds500/images/val/101085.jpg",  # 321x481 portrait
]
# Model of FAMILY_MODELS -> the photos it is checked on (SAM-HQ's TinyViT shares both sides' code
# with the other two, so one photo).
CASES = [(model, photo) for model in ("sam", "mobile_sam", "sam_hq") for photo in PHOTOS]
CASES.append(("sam_hq_tiny", PHOTOS[0]))


def assert_same_prediction(ours, official):
    """Compare (masks, iou, low_res) triples; masks may be logits or booleans."""
    masks, iou, low_res = ours
    ref_masks, ref_iou, ref_low_res = official
    assert masks.shape == ref_masks.shape and masks.dtype == ref_masks.dtype
    assert iou.shape == ref_iou.shape and iou.dtype == ref_iou.dtype
    assert low_res.shape == ref_low_res.shape and low_res.dtype == ref_low_res.dtype
    np.testing.assert_allclose(iou, ref_iou, rtol=0, atol=ATOL)
    np.testing.assert_allclose(low_res, ref_low_res, rtol=0, atol=ATOL)
    if masks.dtype == np.bool_:
        assert (masks != ref_masks).mean() < 1e-5
    else:
        np.testing.assert_allclose(masks, ref_masks, rtol=0, atol=ATOL)


@pytest.fixture(scope="module", params=CASES, ids=lambda case: f"{case[0]}-{case[1].split('/')[-1]}")
def predictors(request, shared_data, family_checkpoint):
    """(ours, reference) predictors of one model with the same photo set."""
    model, photo = request.param
    config = FAMILY_MODELS[model]
    checkpoint = family_checkpoint(model)
    package = reference.import_reference(reference.REFERENCES[config.family])
    image = load_rgb(shared_data / photo)
    ours = segany.SamPredictor(segany.load_model(checkpoint))
    assert ours.model.config == config
    official = package.SamPredictor(reference.load_reference(config, checkpoint))
    ours.set_image(image)
    official.set_image(image)
    return ours, official


def test_image_embedding_matches(predictors):
    ours, official = predictors
    assert ours.original_size == official.original_size
    assert ours.input_size == official.input_size
    embedding, ref_embedding = ours.get_image_embedding(), official.get_image_embedding()
    assert embedding.shape == ref_embedding.shape == (1, 256, 64, 64)
    torch.testing.assert_close(embedding, ref_embedding, rtol=0, atol=ATOL)


def test_high_res_features_match(predictors):
    """SAM-HQ's fused early features, which its reference computes inside every decoder call."""
    ours, official = predictors
    features = ours.get_high_res_features()
    if not hasattr(official, "interm_features"):
        assert features == ()
        return
    decoder = official.model.mask_decoder
    early = official.interm_features[0].permute(0, 3, 1, 2)
    want = decoder.embedding_encoder(official.features) + decoder.compress_vit_feat(early)
    (got,) = features
    assert got.shape == want.shape == (1, 32, 256, 256)
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)


@pytest.mark.parametrize("prompt", ["one_point", "pos_neg_points", "box", "box_and_points"])
@pytest.mark.parametrize("multimask", [True, False])
def test_predict_matches(predictors, prompt, multimask):
    ours, official = predictors
    kwargs = parity_prompts(*ours.original_size)[prompt]
    for return_logits in (True, False):
        assert_same_prediction(
            ours.predict(**kwargs, multimask_output=multimask, return_logits=return_logits),
            official.predict(**kwargs, multimask_output=multimask, return_logits=return_logits),
        )


@pytest.mark.parametrize("multimask", [True, False])
def test_hq_token_only_matches(predictors, multimask):
    ours, official = predictors
    if not ours.model.config.decoder == "hq":
        with pytest.raises(segany.SegAnyError, match="hq_token_only"):
            ours.predict(box=np.array([0, 0, 10, 10]), hq_token_only=True)
        return
    h, w = ours.original_size
    for kwargs in parity_prompts(h, w).values():
        assert_same_prediction(
            ours.predict(**kwargs, multimask_output=multimask, return_logits=True, hq_token_only=True),
            official.predict(**kwargs, multimask_output=multimask, return_logits=True, hq_token_only=True),
        )
    boxes = np.array([[0.1 * w, 0.1 * h, 0.5 * w, 0.6 * h], [0.4 * w, 0.2 * h, 0.9 * w, 0.9 * h]])
    masks, scores, low_res = ours.predict_batch(boxes=boxes, return_logits=True, hq_token_only=True)
    for i, box in enumerate(boxes):
        assert_same_prediction((masks[i], scores[i], low_res[i]),
                               official.predict(box=box, return_logits=True, hq_token_only=True))


def test_mask_input_from_previous_call_matches(predictors):
    ours, official = predictors
    kwargs = parity_prompts(*ours.original_size)["pos_neg_points"]
    _, scores, low_res = official.predict(**kwargs, multimask_output=True)
    previous = low_res[np.argmax(scores)][None]  # 1, 256, 256
    assert_same_prediction(
        ours.predict(**kwargs, mask_input=previous, multimask_output=False, return_logits=True),
        official.predict(**kwargs, mask_input=previous, multimask_output=False, return_logits=True),
    )


def test_batched_boxes_through_predict_torch_match(predictors):
    ours, official = predictors
    h, w = ours.original_size
    rng = np.random.default_rng(0)
    corners = np.sort(rng.uniform(0, 1, size=(6, 2, 2)), axis=1) * [w, h]  # B, (top-left, bottom-right), xy
    boxes = torch.as_tensor(corners.reshape(6, 4), dtype=torch.float)
    our_boxes = ours.transform.apply_boxes_torch(boxes, ours.original_size)
    official_boxes = official.transform.apply_boxes_torch(boxes, official.original_size)
    for multimask in (True, False):
        got = ours.predict_torch(None, None, boxes=our_boxes, multimask_output=multimask, return_logits=True)
        want = official.predict_torch(None, None, official_boxes, multimask_output=multimask, return_logits=True)
        assert_same_prediction([t.numpy() for t in got], [t.numpy() for t in want])


def test_batched_points_through_predict_torch_match(predictors):
    ours, official = predictors
    h, w = ours.original_size
    rng = np.random.default_rng(1)
    coords = torch.as_tensor(rng.uniform(0, 1, size=(5, 3, 2)) * [w, h], dtype=torch.float)
    labels = torch.as_tensor(rng.integers(0, 2, size=(5, 3)), dtype=torch.int)
    got = ours.predict_torch(ours.transform.apply_coords_torch(coords, ours.original_size), labels, return_logits=True)
    want = official.predict_torch(
        official.transform.apply_coords_torch(coords, official.original_size), labels, return_logits=True
    )
    assert_same_prediction([t.numpy() for t in got], [t.numpy() for t in want])


def test_batched_prompts_with_mask_inputs_match(predictors):
    """More prompts than one decoder call takes, each with its own mask prompt."""
    ours, official = predictors
    h, w = ours.original_size
    rng = np.random.default_rng(2)
    count = 2 * PROMPTS_PER_DECODER_CALL + 1
    coords = torch.as_tensor(rng.uniform(0, 1, size=(count, 2, 2)) * [w, h], dtype=torch.float)
    labels = torch.as_tensor(rng.integers(0, 2, size=(count, 2)), dtype=torch.int)
    mask_input = torch.as_tensor(rng.normal(0, 5, size=(count, 1, 256, 256)), dtype=torch.float)
    got = ours.predict_torch(ours.transform.apply_coords_torch(coords, ours.original_size), labels,
                             mask_input=mask_input, return_logits=True)
    want = official.predict_torch(official.transform.apply_coords_torch(coords, official.original_size), labels,
                                  mask_input=mask_input, return_logits=True)
    assert_same_prediction([t.numpy() for t in got], [t.numpy() for t in want])


def test_whole_batch_in_one_decoder_call_matches(predictors, monkeypatch):
    """Off the CPU every prompt goes through one decoder call: the same results (checked here on
    the CPU by lifting its per-call limit), with and without mask prompts."""
    monkeypatch.setattr(segany.predictor, "PROMPTS_PER_DECODER_CALL", 10_000)
    test_batched_prompts_with_mask_inputs_match(predictors)
    ours, official = predictors
    h, w = ours.original_size
    coords = torch.as_tensor(np.random.default_rng(3).uniform(0, 1, size=(9, 1, 2)) * [w, h], dtype=torch.float)
    labels = torch.ones(9, 1, dtype=torch.int)
    got = ours.predict_torch(ours.transform.apply_coords_torch(coords, ours.original_size), labels,
                             return_logits=True)
    want = official.predict_torch(official.transform.apply_coords_torch(coords, official.original_size), labels,
                                  return_logits=True)
    assert_same_prediction([t.numpy() for t in got], [t.numpy() for t in want])


def test_predict_batch_equals_official_one_by_one(predictors):
    """Our many-prompts call gives what the official predictor gives prompt by prompt."""
    ours, official = predictors
    h, w = ours.original_size
    boxes = np.array([[0.1 * w, 0.1 * h, 0.5 * w, 0.6 * h], [0.4 * w, 0.2 * h, 0.9 * w, 0.9 * h]])
    masks, scores, low_res = ours.predict_batch(boxes=boxes, return_logits=True)
    for i, box in enumerate(boxes):
        assert_same_prediction((masks[i], scores[i], low_res[i]), official.predict(box=box, return_logits=True))


@pytest.mark.parametrize("model", ["sam", "mobile_sam", "sam_hq"])
def test_model_forward_matches(shared_data, family_checkpoint, model):
    """`Sam.forward` on a batch of two images with prompts in the resized frame."""
    config, checkpoint = FAMILY_MODELS[model], family_checkpoint(model)
    ours = segany.load_model(checkpoint)
    official = reference.load_reference(config, checkpoint)
    transform = segany.ResizeLongestSide(1024)
    batch = []
    for name, box in (("examples/dog.jpg", [50, 60, 400, 500]), ("examples/groceries.jpg", [10, 10, 300, 200])):
        image = load_rgb(shared_data / name)
        resized = torch.as_tensor(transform.apply_image(image)).permute(2, 0, 1)
        batch.append(
            {
                "image": resized,
                "original_size": image.shape[:2],
                "boxes": transform.apply_boxes_torch(torch.tensor([box], dtype=torch.float), image.shape[:2]),
                "point_coords": transform.apply_coords_torch(torch.tensor([[[200.0, 150.0]]]), image.shape[:2]),
                "point_labels": torch.tensor([[1]]),
            }
        )
    got, want = ours(batch, multimask_output=True), official(batch, multimask_output=True)
    for g, w in zip(got, want):
        torch.testing.assert_close(g["iou_predictions"], w["iou_predictions"], rtol=0, atol=ATOL)
        torch.testing.assert_close(g["low_res_logits"], w["low_res_logits"], rtol=0, atol=ATOL)
        assert (g["masks"] != w["masks"]).float().mean() < 1e-5


@pytest.mark.slow
def test_full_vit_b_matches_official(shared_data, tmp_path):
    """Full-size vit_b through the official builder and our registry and loader."""
    sa = reference.import_official()
    config = segany.CONFIGS["vit_b"]
    checkpoint = reference.write_reference_checkpoint(config, tmp_path / "sam_vit_b_random.pth", seed=7)
    official = sa.SamPredictor(sa.sam_model_registry["vit_b"](checkpoint=str(checkpoint)))
    loaded = segany.load_model(checkpoint)
    assert loaded.config == config
    ours = segany.SamPredictor(loaded)
    image = load_rgb(shared_data / "examples/dog.jpg")
    ours.set_image(image)
    official.set_image(image)
    torch.testing.assert_close(ours.get_image_embedding(), official.get_image_embedding(), rtol=0, atol=ATOL)
    for kwargs in parity_prompts(*ours.original_size).values():
        for multimask in (True, False):
            assert_same_prediction(
                ours.predict(**kwargs, multimask_output=multimask, return_logits=True),
                official.predict(**kwargs, multimask_output=multimask, return_logits=True),
            )
    # The drop-in registry gives the same model as the loader.
    registry_model = segany.sam_model_registry["vit_b"](checkpoint=checkpoint)
    for (name, a), (_, b) in zip(registry_model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
