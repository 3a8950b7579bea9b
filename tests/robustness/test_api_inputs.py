"""Bad input through the Python API: SegAnyError (a ValueError) naming the argument, never a wrong answer."""

import numpy as np
import pytest
import torch

import segany
from conftest import REPO
from hostile import hostile_images, micro_model_file  # noqa: F401 (fixtures)
from segany.amg.generator import check_settings
from segany.errors import SegAnyError
from segany.image_io import read_image
from segany.masks import check_rle, mask_to_rle
from segany.modeling import SamConfig

IMAGE = REPO / "examples" / "chelsea.png"


@pytest.fixture(scope="module")
def predictor(micro_model_file):
    predictor = segany.SamPredictor(segany.load_model(micro_model_file))
    predictor.set_image(read_image(IMAGE))
    return predictor


NAN, INF = float("nan"), float("inf")
PREDICT = [
    ("point-nan", dict(point_coords=[[NAN, 1]], point_labels=[1]), "point_coords holds NaN or infinite values"),
    ("point-inf", dict(point_coords=[[INF, 1]], point_labels=[1]), "point_coords holds NaN or infinite values"),
    ("point-minus-inf", dict(point_coords=[[1, -INF]], point_labels=[1]), "point_coords holds NaN"),
    ("box-nan", dict(box=[0, 0, NAN, 5]), "boxes holds NaN or infinite values"),
    ("box-inf", dict(box=[0, 0, INF, 5]), "boxes holds NaN or infinite values"),
    ("box-size", dict(box=[0, 0, 5]), r"box must have shape \(4,\)"),
    ("label-7", dict(point_coords=[[1, 1]], point_labels=[7]), "point_labels must be 1 .* got 7"),
    ("label-half", dict(point_coords=[[1, 1]], point_labels=[0.5]), "point_labels must be whole numbers"),
    ("label-nan", dict(point_coords=[[1, 1]], point_labels=[NAN]), "point_labels must be whole numbers"),
    ("label-text", dict(point_coords=[[1, 1]], point_labels=["fg"]), "point_labels must be whole numbers"),
    ("labels-missing", dict(point_coords=[[1, 1]]), "point_labels must be supplied"),
    ("labels-count", dict(point_coords=[[1, 1], [2, 2]], point_labels=[1]), "point_labels must have shape"),
    ("points-shape", dict(point_coords=[1, 1], point_labels=[1]), r"point_coords must have shape \(N, 2\)"),
    ("mask-shape", dict(mask_input=np.zeros((1, 7, 7))), r"mask_input must have shape \(1, 64, 64\), got \(1, 7, 7\)"),
    ("mask-nan", dict(mask_input=np.full((1, 64, 64), NAN)), "mask_input holds NaN or infinite values"),
]  # the micro model's mask input is 64 x 64


@pytest.mark.parametrize("prompt, message", [c[1:] for c in PREDICT], ids=[c[0] for c in PREDICT])
def test_predict_refuses_bad_prompts(predictor, prompt, message):
    with pytest.raises(SegAnyError, match=message):
        predictor.predict(**prompt)


def test_predict_torch_refuses_the_same(predictor):
    with pytest.raises(SegAnyError, match="point_coords holds NaN"):
        predictor.predict_torch(torch.tensor([[[NAN, 1.0]]]), torch.tensor([[1]]))
    with pytest.raises(SegAnyError, match="point_labels must be 1 .* got 9"):
        predictor.predict_torch(torch.tensor([[[1.0, 1.0]]]), torch.tensor([[9]]))


GENERATOR = [
    ("points-fraction", dict(points_per_side=2.5), "points_per_side must be an integer, got 2.5"),
    ("points-bool", dict(points_per_side=True), "points_per_side must be an integer, got True"),
    ("points-zero", dict(points_per_side=0), r"points_per_side must be in \[1, 4096\], got 0"),
    ("points-huge", dict(points_per_side=10**6), r"points_per_side must be in \[1, 4096\]"),
    ("iou-nan", dict(pred_iou_thresh=NAN), "pred_iou_thresh must be finite"),
    ("nms-negative", dict(box_nms_thresh=-1), r"box_nms_thresh must be in \[0, 1\]"),
    ("layers-negative", dict(crop_n_layers=-1), "crop_n_layers must be at least 0"),
    ("downscale-zero", dict(crop_n_points_downscale_factor=0), "crop_n_points_downscale_factor must be at least 1"),
    ("batch-zero", dict(points_per_batch=0), "points_per_batch must be at least 1"),
    ("area-float", dict(min_mask_region_area=2.5), "min_mask_region_area must be an integer"),
    ("mode", dict(output_mode="png"), "output_mode must be one of"),
    ("both", dict(points_per_side=4, point_grids=[np.zeros((1, 2))]), "exactly one of points_per_side and point_grids"),
    ("grid-outside", dict(points_per_side=None, point_grids=[np.array([[0.5, 1.5]])]),
     r"point_grids\[0\] must hold points \(x, y\) in \[0, 1\]"),
    ("grid-negative", dict(points_per_side=None, point_grids=[np.array([[-0.1, 0.5]])]), r"in \[0, 1\]"),
    ("grid-nan", dict(points_per_side=None, point_grids=[np.array([[NAN, 0.5]])]), "point_grids.0. holds NaN"),
    ("grid-shape", dict(points_per_side=None, point_grids=[np.zeros((4, 3))]), r"must have shape \(N, 2\)"),
    ("grid-empty", dict(points_per_side=None, point_grids=[np.zeros((0, 2))]), r"with N >= 1"),
    ("grid-text", dict(points_per_side=None, point_grids=[[["a", "b"]]]), r"an \(N, 2\) array of numbers"),
    ("grids-count", dict(points_per_side=None, point_grids=[np.zeros((1, 2))], crop_n_layers=1),
     "point_grids has 1 grids; crop_n_layers=1 needs 2"),
]


@pytest.mark.parametrize("settings, message", [c[1:] for c in GENERATOR], ids=[c[0] for c in GENERATOR])
def test_generator_refuses_bad_settings(micro_model_file, settings, message):
    with pytest.raises(SegAnyError, match=message):
        check_settings(**settings)
    with pytest.raises(SegAnyError, match=message):
        segany.SamAutomaticMaskGenerator(segany.load_model(micro_model_file), **settings)


@pytest.mark.parametrize("device, message", [
    ("bogus", "unknown device 'bogus'"), ("cuda", "CUDA is not available"), ("mps", "MPS is not available"),
    ("xla", "not supported"),
])
def test_load_model_refuses_devices_that_are_not_here(micro_model_file, device, message):
    with pytest.raises(SegAnyError, match=message):
        segany.load_model(micro_model_file, device=device)


@pytest.mark.parametrize("name, message", [
    ("bomb.png", "exceeds limit"), ("large.png", "more than the 134217728 allowed"),
    ("short.png", "truncated PNG"), ("truncated.png", "truncated PNG"), ("truncated.jpg", "truncated"),
    ("text.png", "not an image file"), ("folder.png", "is a directory"),
])
def test_read_image_refuses_broken_files(hostile_images, name, message):
    with pytest.raises(SegAnyError, match=message):
        read_image(hostile_images[name])


MASK = np.zeros((6, 5), dtype=bool)
MASK[1:4, 2:4] = True
RLES = [
    ("uncompressed-short", {"size": [6, 5], "counts": [3, 4]}, "run lengths sum to 7, not H \\* W = 30"),
    ("uncompressed-long", {"size": [6, 5], "counts": [30, 4]}, "run lengths sum to 34"),
    ("uncompressed-floats", {"size": [6, 5], "counts": [10.5, 19.5]}, "a list of run lengths"),
    ("uncompressed-bools", {"size": [6, 5], "counts": [True, False]}, "a list of run lengths"),
    ("compressed-other-size", {"size": [5, 6], "counts": mask_to_rle(MASK)["counts"]}, "is not the image's"),
    ("compressed-garbage", {"size": [6, 5], "counts": "!!"}, "character '!'"),
    ("size-float", {"size": [6.0, 5], "counts": [30]}, r"size: expected \[H, W\]"),
    ("size-huge", {"size": [2**40, 5], "counts": [30]}, r"size: expected \[H, W\]"),
    ("no-counts", {"size": [6, 5]}, "expected a COCO RLE"),
    ("not-a-dict", [6, 5, 30], "expected a COCO RLE"),
]


@pytest.mark.parametrize("rle, message", [c[1:] for c in RLES], ids=[c[0] for c in RLES])
def test_rles_that_do_not_encode_a_whole_mask_are_refused(rle, message):
    with pytest.raises(SegAnyError, match=message):
        check_rle(rle, size=(6, 5))


@pytest.mark.parametrize("fields, message", [
    (dict(image_size="big"), "image_size must be an integer"), (dict(patch_size=0), "patch_size must be at least 1"),
    (dict(image_size=1000), "not a multiple of patch_size"), (dict(prompt_embed_dim=250), "decoder_num_heads"),
    (dict(encoder_num_heads=5), "encoder_num_heads"), (dict(pixel_std=(1.0, 0.0, 1.0)), r"pixel_std \(G\)"),
    (dict(pixel_mean=(0.0, NAN, 0.0)), "pixel_mean must be"), (dict(encoder_global_attn_indexes=(12,)), "in \\[0, 11\\]"),
    (dict(encoder="resnet"), "unknown encoder 'resnet'"), (dict(encoder="mobilenet_v2", patch_size=4), "8, 16 or 32"),
])
def test_model_configs_with_wrong_fields_are_refused(fields, message):
    with pytest.raises(SegAnyError, match=message):
        SamConfig(**fields)
