import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segany.data.sa1b import read_sa1b, read_sa1b_masks, sa1b_image_id, write_sa1b
from segany.errors import SegAnyError
from segany.masks import mask_to_rle


def records_for(masks):
    return [
        {"segmentation": mask_to_rle(m), "area": int(m.sum()), "bbox": [1, 2, 3, 4], "predicted_iou": 0.9,
         "point_coords": [[5.5, 6.5]], "stability_score": 0.97, "crop_box": [0, 0, m.shape[1], m.shape[0]]}
        for m in masks
    ]


@pytest.fixture
def masks():
    rng = np.random.default_rng(0)
    return rng.random((4, 30, 50)) < 0.3


def test_round_trip_keeps_every_mask_and_field(tmp_path, masks):
    path = tmp_path / "sa_000123.json"
    write_sa1b(path, "sa_000123.jpg", 50, 30, records_for(masks))
    image, annotations = read_sa1b(path)
    assert image == {"image_id": 123, "width": 50, "height": 30, "file_name": "sa_000123.jpg"}
    assert [a["id"] for a in annotations] == [0, 1, 2, 3]
    np.testing.assert_array_equal(read_sa1b_masks(path), masks)
    assert annotations[0]["point_coords"] == [[5.5, 6.5]] and annotations[0]["crop_box"] == [0, 0, 50, 30]


def test_written_masks_decode_with_pycocotools(tmp_path, masks):
    path = tmp_path / "x.json"
    write_sa1b(path, "x.png", 50, 30, records_for(masks))
    for annotation, mask in zip(json.loads(path.read_text())["annotations"], masks):
        rle = dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode())
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), mask)
        assert mask_utils.area(rle) == annotation["area"]


def test_image_ids():
    assert sa1b_image_id("sa_223750.jpg") == 223750
    assert sa1b_image_id("photo.jpg") == sa1b_image_id("photo.jpg") != sa1b_image_id("photo2x.jpg")


@pytest.mark.parametrize("document,message", [
    ("{", "not a readable SA-1B JSON file"),
    ('{"annotations": []}', "missing field 'image'"),
    ('{"image": {"image_id": 1, "width": 5, "height": 4}, "annotations": []}', r"missing field 'image.file_name'"),
    ('{"image": {"image_id": 1, "width": 5, "height": 4, "file_name": "a"}}', "missing field 'annotations'"),
    ('{"image": {"image_id": 1, "width": 5, "height": 4, "file_name": "a"}, "annotations": [{"id": 0}]}',
     r"annotations\[0\]: missing field 'segmentation'"),
    ('{"image": {"image_id": 1, "width": 5, "height": 4, "file_name": "a"}, '
     '"annotations": [{"segmentation": {"size": [3, 5], "counts": "5"}}]}', r"annotations\[0\].segmentation.size: \[3, 5\] is not the image's \[H, W\] \[4, 5\]"),
    ('{"image": {"image_id": 1, "width": 5, "height": 4, "file_name": "a"}, '
     '"annotations": [{"segmentation": {"size": [4, 5], "counts": [3, 4]}}]}',
     r"annotations\[0\].segmentation.counts: run lengths sum to 7, not H \* W = 20"),
    ('{"image": {"image_id": 1, "width": "5", "height": 4, "file_name": "a"}, "annotations": []}',
     r"image.width must be an integer, got '5'"),
])
def test_bad_files_are_refused_naming_the_field(tmp_path, document, message):
    path = tmp_path / "bad.json"
    path.write_text(document)
    with pytest.raises(SegAnyError, match=message):
        read_sa1b(path)


def test_records_without_coco_rle_are_refused(tmp_path, masks):
    records = records_for(masks)
    records[0]["segmentation"] = masks[0]
    with pytest.raises(SegAnyError, match="output_mode='coco_rle'"):
        write_sa1b(tmp_path / "x.json", "x.png", 50, 30, records)
    assert not (tmp_path / "x.json").exists()
