"""Predictor behaviour beyond the official one: image conversions, saved embeddings, batches."""

import numpy as np
import pytest
import torch
from PIL import Image

import segany
from conftest import MICRO
from segany.errors import ImageError, SegAnyError
from segany.transforms import to_rgb_uint8


@pytest.fixture(scope="module")
def predictor():
    return segany.SamPredictor(segany.random_model(MICRO, seed=5))


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 90 * 120 * 3).reshape(90, 120, 3)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def embedding_of(predictor, image, **kwargs):
    predictor.set_image(image, **kwargs)
    return predictor.get_image_embedding().clone()


def test_grayscale_is_the_same_as_three_equal_channels(predictor, photo):
    gray = photo[:, :, 0]
    expected = embedding_of(predictor, np.repeat(gray[:, :, None], 3, axis=2))
    torch.testing.assert_close(embedding_of(predictor, gray), expected, rtol=0, atol=0)
    torch.testing.assert_close(embedding_of(predictor, gray[:, :, None]), expected, rtol=0, atol=0)


def test_rgba_drops_alpha_and_bgr_is_flipped(predictor, photo):
    expected = embedding_of(predictor, photo)
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 7, np.uint8)], axis=2)
    torch.testing.assert_close(embedding_of(predictor, rgba), expected, rtol=0, atol=0)
    torch.testing.assert_close(
        embedding_of(predictor, np.ascontiguousarray(photo[:, :, ::-1]), image_format="BGR"), expected, rtol=0, atol=0
    )


def test_sixteen_bit_float_and_pil_images_convert_to_the_same_pixels(photo):
    assert np.array_equal(to_rgb_uint8(photo.astype(np.uint16) * 257), photo)
    assert np.array_equal(to_rgb_uint8(photo.astype(np.float32) / 255), photo)
    assert np.array_equal(to_rgb_uint8(Image.fromarray(photo)), photo)
    assert np.array_equal(to_rgb_uint8(photo.astype(np.int32)), photo)
    assert np.array_equal(to_rgb_uint8(np.array([[True, False]])), [[[255] * 3, [0] * 3]])


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((4, 4, 2), np.uint8), r"shape .* got \(4, 4, 2\)"),
        (np.zeros((2, 4, 4, 3), np.uint8), r"got \(2, 4, 4, 3\)"),
        (np.zeros((0, 4, 3), np.uint8), r"got \(0, 4, 3\)"),
        (np.full((4, 4, 3), 3.5), r"float image values must lie in \[0, 1\], found 3.5\.\.3.5"),
        (np.full((4, 4), -1, np.int32), r"0\.\.65535, found -1\.\.-1"),
        (np.zeros((4, 4, 3), np.complex64), r"unsupported image dtype complex64"),
        ([[1, 2], [3, 4]], r"numpy array or PIL image, got list"),
    ],
)
def test_bad_images_are_refused(predictor, image, message):
    with pytest.raises(ImageError, match=message):
        predictor.set_image(image)


def test_bad_image_format_is_refused(predictor, photo):
    with pytest.raises(ImageError, match="image_format must be 'RGB' or 'BGR', got 'HSV'"):
        predictor.set_image(photo, image_format="HSV")


def test_saved_embedding_gives_the_same_masks(predictor, photo, tmp_path):
    predictor.set_image(photo)
    np.save(tmp_path / "embedding.npy", predictor.get_image_embedding().numpy())
    kwargs = dict(point_coords=np.array([[30, 40], [100, 20]]), point_labels=np.array([1, 0]), return_logits=True)
    expected = predictor.predict(**kwargs)

    fresh = segany.SamPredictor(predictor.model)
    fresh.set_embedding(np.load(tmp_path / "embedding.npy"), photo.shape[:2])
    assert fresh.input_size == predictor.input_size and fresh.original_size == predictor.original_size
    for got, want in zip(fresh.predict(**kwargs), expected):
        np.testing.assert_array_equal(got, want)


def test_embedding_of_the_wrong_shape_is_refused(predictor):
    with pytest.raises(SegAnyError, match=r"embedding must have shape \(1, 64, 16, 16\), got \(1, 256, 64, 64\)"):
        predictor.set_embedding(np.zeros((1, 256, 64, 64), np.float32), (100, 100))


def test_many_prompts_in_one_call_equal_one_by_one(predictor, photo):
    predictor.set_image(photo)
    coords = np.array([[[10, 10], [50, 60]], [[100, 80], [20, 70]], [[60, 45], [61, 46]]], dtype=float)
    labels = np.array([[1, 0], [1, 1], [1, -1]])
    boxes = np.array([[0, 0, 60, 50], [30, 20, 110, 85], [5, 5, 20, 20]], dtype=float)
    masks, scores, low_res = predictor.predict_batch(coords, labels, boxes, return_logits=True)
    assert masks.shape == (3, 3, 90, 120) and scores.shape == (3, 3) and low_res.shape == (3, 3, 64, 64)
    for i in range(3):
        single = predictor.predict(coords[i], labels[i], boxes[i], return_logits=True)
        for got, want in zip((masks[i], scores[i], low_res[i]), single):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_output_types_and_shapes_follow_the_official_predictor(predictor, photo):
    predictor.set_image(photo)
    masks, scores, low_res = predictor.predict(np.array([[30, 30]]), np.array([1]), multimask_output=False)
    assert masks.dtype == np.bool_ and masks.shape == (1, 90, 120)
    assert scores.dtype == np.float32 and scores.shape == (1,)
    assert low_res.dtype == np.float32 and low_res.shape == (1, 64, 64)


def test_prompt_errors_name_the_field(predictor, photo):
    predictor.set_image(photo)
    with pytest.raises(SegAnyError, match=r"point_coords must have shape \(N, 2\), got \(3,\)"):
        predictor.predict(np.array([1, 2, 3]), np.array([1]))
    with pytest.raises(SegAnyError, match="point_labels must be supplied"):
        predictor.predict(np.array([[1, 2]]))
    with pytest.raises(SegAnyError, match=r"point_labels must have shape \(1, 2\), got \(1, 3\)"):
        predictor.predict(np.array([[1, 2], [3, 4]]), np.array([1, 0, 1]))
    with pytest.raises(SegAnyError, match=r"box must have shape \(4,\), got \(3,\)"):
        predictor.predict(box=np.array([1, 2, 3]))
    with pytest.raises(SegAnyError, match=r"mask_input must have shape \(1, 64, 64\), got \(256, 256\)"):
        predictor.predict(box=np.array([1, 2, 3, 4]), mask_input=np.zeros((256, 256)))
    with pytest.raises(SegAnyError, match=r"different numbers of prompts: \[1, 2\]"):
        predictor.predict_batch(np.zeros((1, 1, 2)), np.ones((1, 1)), boxes=np.zeros((2, 4)))


def test_predicting_without_an_image_is_an_error(predictor):
    predictor.reset_image()
    with pytest.raises(RuntimeError, match="An image must be set"):
        predictor.predict(np.array([[1, 1]]), np.array([1]))
    with pytest.raises(RuntimeError, match="An image must be set"):
        predictor.get_image_embedding()


def test_bfloat16_predictor_returns_float32_close_to_float32(predictor, photo):
    fast = segany.SamPredictor(predictor.model, dtype=torch.bfloat16)
    fast.set_image(photo)
    predictor.set_image(photo)
    a, b = fast.get_image_embedding(), predictor.get_image_embedding()
    assert a.dtype == torch.float32
    assert 0 < ((a - b).norm() / b.norm()).item() < 0.03  # bf16 really ran, and stayed close
    kwargs = dict(point_coords=np.array([[30, 40]]), point_labels=np.array([1]), return_logits=True)
    for got, want in zip(fast.predict(**kwargs), predictor.predict(**kwargs)):
        assert got.dtype == want.dtype and got.shape == want.shape


def test_the_decoder_stays_float32_unless_asked(predictor, photo):
    """`dtype` is the encoder's precision; the decoder runs in bfloat16 only with decoder_dtype."""
    predictor.set_image(photo)
    size = photo.shape[:2]
    kwargs = dict(point_coords=np.array([[30, 40]]), point_labels=np.array([1]), return_logits=True)
    want = predictor.predict(**kwargs)
    encoder_only = segany.SamPredictor(predictor.model, dtype=torch.bfloat16)
    both = segany.SamPredictor(predictor.model, dtype=torch.bfloat16, decoder_dtype=torch.bfloat16)
    for other in (encoder_only, both):
        other.set_embedding(predictor.get_image_embedding(), size)  # the same float32 embedding
    for got, expected in zip(encoder_only.predict(**kwargs), want):
        np.testing.assert_array_equal(got, expected)
    logits = both.predict(**kwargs)[0]
    assert not np.array_equal(logits, want[0]) and np.abs(logits - want[0]).max() < 0.1 * np.abs(want[0]).max()


def test_unsupported_dtype_is_refused(predictor):
    with pytest.raises(SegAnyError, match="dtype must be torch.float32 or torch.bfloat16, got torch.float16"):
        segany.SamPredictor(predictor.model, dtype=torch.float16)
    with pytest.raises(SegAnyError, match="decoder_dtype must be torch.float32 or torch.bfloat16"):
        segany.SamPredictor(predictor.model, decoder_dtype=torch.float16)


def test_repeated_prompts_reuse_the_image_side_exactly(predictor, photo):
    """The decoder's per-image work is cached after the first prompt; results do not change."""
    predictor.set_image(photo)
    kwargs = dict(point_coords=np.array([[30, 40], [70, 20]]), point_labels=np.array([1, 0]), return_logits=True)
    first = predictor.predict(**kwargs)
    assert predictor._image_side is not None
    predictor.predict(box=np.array([10, 10, 80, 60]))
    for again, want in zip(predictor.predict(**kwargs), first):
        np.testing.assert_array_equal(again, want)
    model = predictor.model
    coords = torch.as_tensor(predictor.transform.apply_coords(kwargs["point_coords"], predictor.original_size),
                             dtype=torch.float)[None]
    with torch.no_grad():
        sparse, dense = model.prompt_encoder((coords, torch.tensor([[1, 0]])), None, None)
        low_res, iou = model.mask_decoder(predictor.features, model.prompt_encoder.get_dense_pe(), sparse, dense, True)
    np.testing.assert_array_equal(low_res[0].numpy(), first[2])
    np.testing.assert_array_equal(iou[0].numpy(), first[1])
    photo_2 = np.ascontiguousarray(photo[::-1])
    predictor.set_image(photo_2)
    assert predictor._image_side is None  # a new image drops the cache


def test_sam2_api_on_a_sam_model_answers_as_sam_predictor():
    """SAM2ImagePredictor maps prompts with the model's own resizing (here SAM's longest side and
    padding, not SAM 2's square), in pixels and normalised."""
    model = segany.random_model(MICRO, seed=5)
    image = np.random.default_rng(0).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    ours, theirs = segany.SamPredictor(model), segany.SAM2ImagePredictor(model)
    ours.set_image(image)
    theirs.set_image(image)
    points, box = np.array([[150.0, 40.0], [30.0, 90.0]]), np.array([20.0, 10.0, 180.0, 100.0])
    want = ours.predict(points, np.array([1, 0]), box=box, return_logits=True)
    for normalize, scale in ((True, [1, 1]), (False, [200, 120])):
        got = theirs.predict(points / scale, np.array([1, 0]), box=box / np.tile(scale, 2), return_logits=True,
                             normalize_coords=normalize)
        np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-6)
