"""ONNX export: the decoder graph answers as the official package's ONNX model and our predictor
do with the same weights (on real photos, at image sizes other than the export example's), the
encoder as our PyTorch encoder, and the int8 decoder stays close to the float one."""

import numpy as np
import onnxruntime
import pytest
import torch

import segany
from conftest import FAMILY_MODELS, MICRO, load_rgb
from segany.cli import main
from segany.data import open_dataset
from segany.eval import center_point
from segany.export import DECODER_INPUTS, export_decoder, export_encoder, graph_prompts, prompt_layout
from segany.testing import official as reference


@pytest.fixture(scope="module")
def models(micro_checkpoint):
    reference.import_official()
    official = reference.build_reference(MICRO)
    official.load_state_dict(torch.load(micro_checkpoint))
    return segany.load_model(micro_checkpoint), official


def prompt_feeds(predictor, image, points, labels, mask_input=None):
    """The decoder's inputs for prompts in image pixels, as a web client builds them, with the
    decoder's other image inputs named as the encoder graph names them."""
    height, width = image.shape[:2]
    coords = predictor.transform.apply_coords(np.array([points], dtype=np.float64), (height, width))
    mask_size = predictor.model.prompt_encoder.mask_input_size
    return {
        "image_embeddings": predictor.features.numpy(),
        "point_coords": coords.astype(np.float32),
        "point_labels": np.array([labels], dtype=np.float32),
        "mask_input": np.zeros((1, 1, *mask_size), np.float32) if mask_input is None else mask_input,
        "has_mask_input": np.array([0.0 if mask_input is None else 1.0], np.float32),
        "orig_im_size": np.array([height, width], np.float32),
        **{name: feature.numpy() for name, feature in
           zip(predictor.model.mask_decoder.image_feature_names, predictor.get_high_res_features())},
    }


@pytest.mark.parametrize("single_mask, stability_score", [(False, False), (True, False), (True, True)])
def test_decoder_matches_the_official_onnx_model(models, shared_data, tmp_path, single_mask, stability_score):
    from segment_anything.utils.onnx import SamOnnxModel

    ours, official = models
    path = export_decoder(ours, tmp_path / "decoder.onnx", single_mask=single_mask, stability_score=stability_score)
    session = onnxruntime.InferenceSession(str(path))
    reference_model = SamOnnxModel(official, return_single_mask=single_mask, use_stability_score=stability_score)
    image = load_rgb(shared_data / "examples" / "dog.jpg")  # 534 x 800: not the export example's size
    predictor = segany.SamPredictor(ours)
    predictor.set_image(image)
    previous = np.random.default_rng(0).normal(size=(1, 1, 64, 64)).astype(np.float32)
    cases = [([[300, 200], [0, 0]], [1, -1]),  # a point and the padding point
             ([[300, 200], [350, 260], [120, 80], [0, 0]], [1, 0, 1, -1]),  # more points: another count
             ([[200, 150], [500, 400], [300, 200]], [2, 3, 1])]  # a box and a point
    for points, labels in cases:
        for mask_input in (None, previous):
            feeds = prompt_feeds(predictor, image, points, labels, mask_input)
            found = session.run(None, feeds)
            with torch.no_grad():
                expected = reference_model(*(torch.from_numpy(feeds[name]) for name in DECODER_INPUTS))
            for ours_out, theirs in zip(found, expected):
                np.testing.assert_allclose(ours_out, theirs.numpy(), rtol=0, atol=1e-4)
            assert found[0].shape[-2:] == image.shape[:2]


def test_decoder_matches_our_predictor(models, shared_data, tmp_path):
    ours, _ = models
    session = onnxruntime.InferenceSession(str(export_decoder(ours, tmp_path / "decoder.onnx")))
    image = load_rgb(shared_data / "examples" / "groceries.jpg")
    predictor = segany.SamPredictor(ours)
    predictor.set_image(image)
    logits, iou, low_res = predictor.predict(np.array([[400, 300]]), np.array([1]), return_logits=True)
    masks, iou_onnx, low_res_onnx = session.run(None, prompt_feeds(predictor, image, [[400, 300], [0, 0]], [1, -1]))
    np.testing.assert_allclose(masks[0, 1:], logits, rtol=0, atol=1e-4)  # the 3 multimask outputs
    np.testing.assert_allclose(iou_onnx[0, 1:], iou, rtol=0, atol=1e-4)
    np.testing.assert_allclose(low_res_onnx[0, 1:], low_res, rtol=0, atol=1e-4)


def test_encoder_matches_pytorch(models, tmp_path):
    ours, _ = models
    session = onnxruntime.InferenceSession(str(export_encoder(ours, tmp_path / "encoder.onnx")))
    image = torch.randn(1, 3, ours.image_size, ours.image_size)
    with torch.no_grad():
        expected = ours.image_encoder(image).numpy()
    np.testing.assert_allclose(session.run(None, {"image": image.numpy()})[0], expected, rtol=0, atol=1e-4)


def _perturbed(name):
    model = segany.random_model(name, seed=3)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.02)
    return model


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v2_hr", "vit_t"])
def test_other_encoders_export_both_graphs(shared_data, tmp_path, name):
    """The default architectures (dilated convs, TensorFlow padding; a 32 x 32-grid decoder; with
    and without the trunk's high-resolution features) and MobileSAM (TinyViT), with every weight
    perturbed, against PyTorch on a real photo."""
    model = _perturbed(name)
    image = load_rgb(shared_data / "examples" / "dog.jpg")
    predictor = segany.SamPredictor(model)
    predictor.set_image(image)
    encoder = onnxruntime.InferenceSession(str(export_encoder(model, tmp_path / "encoder.onnx")))
    resized = predictor.transform.apply_image(image)
    pixels = model.preprocess(torch.as_tensor(resized).permute(2, 0, 1)[None].float())
    embedding, *features = encoder.run(None, {"image": pixels.numpy()})
    np.testing.assert_allclose(embedding, predictor.features.numpy(), rtol=0, atol=1e-4)
    assert len(features) == len(model.mask_decoder.image_feature_names) == (2 if name.endswith("_hr") else 0)
    for ours, expected in zip(features, predictor.get_high_res_features()):
        np.testing.assert_allclose(ours, expected.numpy(), rtol=0, atol=1e-4)
    decoder = onnxruntime.InferenceSession(str(export_decoder(model, tmp_path / "decoder.onnx")))
    logits, iou, _ = predictor.predict(np.array([[300, 200]]), np.array([1]), return_logits=True)
    masks, iou_onnx, _ = decoder.run(None, prompt_feeds(predictor, image, [[300, 200], [0, 0]], [1, -1]))
    np.testing.assert_allclose(masks[0, 1:], logits, rtol=0, atol=1e-4)
    np.testing.assert_allclose(iou_onnx[0, 1:], iou, rtol=0, atol=1e-4)


def test_sam_hq_encoder_exports_its_hq_features(tmp_path):
    model = _perturbed("hq_vit_t")
    session = onnxruntime.InferenceSession(str(export_encoder(model, tmp_path / "encoder.onnx")))
    assert [output.name for output in session.get_outputs()] == ["image_embeddings", "hq_features"]
    pixels = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        expected = model.encode_image(pixels)
    embedding, hq_features = session.run(None, {"image": pixels.numpy()})
    np.testing.assert_allclose(embedding, expected[0].numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(hq_features, expected[1][0].numpy(), rtol=0, atol=1e-4)


# A point, points of both labels, a point with a box, a box (image pixels of dog.jpg).
FAMILY_CASES = [{"point_coords": [[300, 200]], "point_labels": [1], "box": None},
                {"point_coords": [[300, 200], [350, 260], [120, 80]], "point_labels": [1, 0, 1], "box": None},
                {"point_coords": [[300, 200]], "point_labels": [1], "box": [200, 150, 500, 400]},
                {"point_coords": None, "point_labels": None, "box": [100, 60, 420, 500]}]


def family_feeds(predictor, image, case, mask_input=None):
    """`prompt_feeds` for a case of FAMILY_CASES laid out for the model's graph (`graph_prompts`)."""
    coords, labels = graph_prompts(prompt_layout(predictor.model), case["point_coords"], case["point_labels"],
                                   case["box"])  # image pixels; the padding point (0, 0) maps to itself
    return prompt_feeds(predictor, image, coords[0].tolist(), labels[0].tolist(), mask_input)


def predictor_prompts(case):
    """A case of FAMILY_CASES as `SamPredictor.predict` takes it."""
    return {key: None if value is None else np.array(value) for key, value in case.items()}


def test_sam_hq_decoder_matches_its_reference_onnx_model(family_checkpoint, shared_data, tmp_path):
    """Full hq_vit_t, noisy weights, against segment_anything_hq's own ONNX wrapper: our 4 outputs
    are its single-mask answer and the 3 candidates its multimask answer chooses from, with SAM's
    mask plus the HQ token's and, in the hq_token_only graph, the HQ token's alone."""
    from segment_anything_hq.predictor import SamPredictor as ReferencePredictor
    from segment_anything_hq.utils.onnx import SamOnnxModel

    checkpoint = family_checkpoint("sam_hq_tiny")
    ours, theirs = segany.load_model(checkpoint), reference.load_reference(FAMILY_MODELS["sam_hq_tiny"], checkpoint)
    image = load_rgb(shared_data / "examples" / "dog.jpg")
    predictor, reference_predictor = segany.SamPredictor(ours), ReferencePredictor(theirs)
    predictor.set_image(image)
    reference_predictor.set_image(image)
    previous = np.random.default_rng(0).normal(size=(1, 1, 256, 256)).astype(np.float32)
    answers = {}
    for hq_token_only in (False, True):
        graph = export_decoder(ours, tmp_path / f"decoder-{hq_token_only}.onnx", hq_token_only=hq_token_only)
        session = onnxruntime.InferenceSession(str(graph))
        assert [i.name for i in session.get_inputs()] == [*DECODER_INPUTS, "hq_features"]
        single, multi = (SamOnnxModel(theirs, hq_token_only=hq_token_only, multimask_output=m) for m in (False, True))
        for case in FAMILY_CASES:
            for mask_input in (None, previous):
                feeds = family_feeds(predictor, image, case, mask_input)
                masks, scores, low_res = session.run(None, feeds)
                answers.setdefault(hq_token_only, []).append(masks)
                inputs = [torch.from_numpy(feeds[name]) for name in DECODER_INPUTS]
                with torch.no_grad():
                    want_single = single(inputs[0], reference_predictor.interm_features, *inputs[1:])
                    want_multi = multi(inputs[0], reference_predictor.interm_features, *inputs[1:])
                best = 1 + scores[0, 1:].argmax()
                for k, want in ((0, want_single), (best, want_multi)):
                    np.testing.assert_allclose(masks[:, k : k + 1], want[0].numpy(), rtol=0, atol=1e-4)
                    np.testing.assert_allclose(scores[:, k : k + 1], want[1].numpy(), rtol=0, atol=1e-4)
                    np.testing.assert_allclose(low_res[:, k : k + 1], want[2].numpy(), rtol=0, atol=1e-4)
    # The two graphs give different masks (SAM's token adds something).
    assert not np.allclose(answers[False][0], answers[True][0], atol=1e-2)


def test_hq_token_only_graph_needs_a_sam_hq_model(tmp_path, micro_checkpoint, capsys):
    assert main(["export-onnx", "--model", str(micro_checkpoint), "--hq-token-only", "-o", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("segany: error: hq_token_only is an option of SAM-HQ models; "
                                       "this model's decoder is not SAM-HQ's\n")
    assert list(tmp_path.iterdir()) == []


def test_sam2_graphs_match_the_predictor(family_checkpoint, shared_data, tmp_path):
    """Full hiera_t, noisy weights in SAM 2.1's layout (tests/test_parity_sam2.py proves the
    predictor equal to sam2's): the encoder's three outputs; the multimask outputs, and the
    single-mask output with SAM 2's stability fallback, taken (these weights' single masks are
    all unstable) and not taken (a graph exported with the fallback's threshold at 0)."""
    ours = segany.load_model(family_checkpoint("sam2"))
    encoder = onnxruntime.InferenceSession(str(export_encoder(ours, tmp_path / "encoder.onnx")))
    names = ["high_res_feats_0", "high_res_feats_1"]
    assert [o.name for o in encoder.get_outputs()] == ["image_embeddings", *names]
    image = load_rgb(shared_data / "examples" / "dog.jpg")
    predictor = segany.SamPredictor(ours)
    predictor.set_image(image)
    pixels = ours.preprocess(torch.as_tensor(predictor.transform.apply_image(image)).permute(2, 0, 1)[None].float())
    for found, want in zip(encoder.run(None, {"image": pixels.numpy()}),
                           [predictor.features, *predictor.get_high_res_features()]):
        np.testing.assert_allclose(found, want.numpy(), rtol=0, atol=1e-4)
    decoder = ours.mask_decoder
    fell_back = {}
    for threshold in (decoder.stability_thresh, 0.0):
        decoder.stability_thresh = threshold
        session = onnxruntime.InferenceSession(str(export_decoder(ours, tmp_path / f"decoder-{threshold}.onnx")))
        assert [i.name for i in session.get_inputs()] == [*DECODER_INPUTS, *names]
        for case in FAMILY_CASES:
            masks, scores, low_res = session.run(None, family_feeds(predictor, image, case))
            for k, multimask in ((slice(0, 1), False), (slice(1, 4), True)):
                logits, iou, low = predictor.predict(**predictor_prompts(case), multimask_output=multimask,
                                                     return_logits=True)
                np.testing.assert_allclose(masks[0, k], logits, rtol=0, atol=1e-4)
                np.testing.assert_allclose(scores[0, k], iou, rtol=0, atol=1e-4)
                np.testing.assert_allclose(low_res[0, k], low, rtol=0, atol=1e-4)
            decoder.dynamic_multimask_via_stability = False  # the single-mask token's own mask
            token = predictor.predict(**predictor_prompts(case), multimask_output=False, return_logits=True)[0]
            decoder.dynamic_multimask_via_stability = True
            fell_back.setdefault(threshold, set()).add(not np.allclose(token, masks[0, :1], rtol=0, atol=1e-4))
    assert fell_back == {0.98: {True}, 0.0: {False}}


def test_int8_decoder_stays_close_to_float(shared_data, tmp_path):
    """The bundled (trained) model: int8 masks against float masks, each object's center point."""
    model = segany.load_model("default")
    exact = onnxruntime.InferenceSession(str(export_decoder(model, tmp_path / "decoder.onnx")))
    small = onnxruntime.InferenceSession(str(export_decoder(model, tmp_path / "int8.onnx", quantize=True)))
    assert (tmp_path / "int8.onnx").stat().st_size < 0.5 * (tmp_path / "decoder.onnx").stat().st_size
    sample = open_dataset("pennfudan", "eval", shared_data)[0]
    predictor = segany.SamPredictor(model)
    predictor.set_image(sample.image)
    ious = []
    for truth in sample.masks:
        x, y = center_point(truth)
        feeds = prompt_feeds(predictor, sample.image, [[x, y], [0, 0]], [1, -1])
        a, b = exact.run(None, feeds)[0] > 0, small.run(None, feeds)[0] > 0
        ious += [(a[0, k] & b[0, k]).sum() / max((a[0, k] | b[0, k]).sum(), 1) for k in range(a.shape[1])]
    assert np.mean(ious) > 0.85  # measured 0.94 over 488 masks of PennFudan and COCO128-seg


def test_cli_writes_the_graphs(tmp_path, micro_checkpoint):
    assert main(["export-onnx", "--model", str(micro_checkpoint), "--encoder", "--quantize", "-o", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["decoder-int8.onnx", "decoder.onnx", "encoder-int8.onnx", "encoder.onnx"]
    for name in names:
        onnxruntime.InferenceSession(str(tmp_path / name))  # loads


def test_export_leaves_the_model_in_eval_mode(tmp_path):
    """The exporter restores its wrapper's mode on every submodule: an exported TinyViT must not
    come back in training mode (its batch norms would then change with every image)."""
    model = segany.random_model("vit_t", seed=1)
    export_encoder(model, tmp_path / "encoder.onnx")
    export_decoder(model, tmp_path / "decoder.onnx")
    assert not any(module.training for module in model.modules())
