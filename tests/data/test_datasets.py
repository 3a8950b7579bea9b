"""Every dataset of ../shared/data loads, with the splits its README names, and the readers
agree with each other on the same masks written in different formats."""

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from segany.data import (
    BSDS500,
    CocoJson,
    LabelMapFolder,
    SA1BFolder,
    YoloSegFolder,
    instance_masks,
    open_dataset,
    shared_dataset,
    write_sa1b,
)
from segany.errors import SegAnyError
from segany.masks import mask_to_rle

# name: (train images, eval images) from the shared data README.
SPLIT_SIZES = {"pennfudan": (120, 50), "dsb2018": (600, 64), "coco128-seg": (100, 26), "bsds500": (200, 200)}


@pytest.mark.parametrize("name", list(SPLIT_SIZES))
def test_shared_datasets_load_with_their_splits(shared_data, name):
    train, evaluation = shared_dataset(name, "train", shared_data), shared_dataset(name, "eval", shared_data)
    assert (len(train), len(evaluation)) == SPLIT_SIZES[name]
    assert not set(train.names) & set(evaluation.names)
    for sample in (train[0], evaluation[len(evaluation) - 1]):
        assert sample.image.dtype == np.uint8 and sample.image.ndim == 3 and sample.image.shape[2] == 3
        assert sample.masks.dtype == bool and sample.masks.shape[1:] == sample.image.shape[:2]
        assert len(sample.masks) > 0 and sample.masks.reshape(len(sample.masks), -1).any(axis=1).all()


def test_pennfudan_eval_split_is_the_last_fifty_by_name(shared_data):
    evaluation = shared_dataset("pennfudan", "eval", shared_data)
    assert evaluation.names[0].startswith("PennPed") and all(n.startswith("PennPed") for n in evaluation.names)


def test_instance_counts_match_the_readme(shared_data):
    pennfudan = shared_dataset("pennfudan", "all", shared_data)
    assert len(pennfudan) == 170 and sum(len(s.masks) for s in pennfudan) == 423
    coco = shared_dataset("coco128-seg", "all", shared_data)
    # The README says 941 instances; its label files hold 929 polygons, one a line.
    lines = sum(len(p.read_text().split("\n")) - p.read_text().endswith("\n")
                for p in (shared_data / "coco128-seg" / "labels").glob("*.txt"))
    assert len(coco) == 126 and sum(len(s.masks) for s in coco) == lines == 929


def test_bsds500_has_every_annotator(shared_data):
    sample = BSDS500(shared_data / "bsds500", "val").load("101085")
    one = BSDS500(shared_data / "bsds500", "val", annotator=0).load("101085")
    assert sample.boundaries.shape == (5, 481, 321) and sample.boundaries.dtype == bool
    assert len(one.masks) < len(sample.masks)
    assert (one.masks.sum(axis=0) == 1).all()  # one annotator's regions tile the image


def test_formats_agree_on_the_same_masks(tmp_path, shared_data):
    """PennFudan masks written as COCO JSON, SA-1B and YOLO polygons read back the same."""
    sample = shared_dataset("pennfudan", "train", shared_data)[0]
    height, width = sample.image.shape[:2]
    (tmp_path / "images").mkdir()
    Image.fromarray(sample.image).save(tmp_path / "images" / "a.png")

    coco = {"images": [{"id": 7, "file_name": "a.png", "height": height, "width": width}],
            "annotations": [{"id": i, "image_id": 7, "segmentation": mask_to_rle(m)} for i, m in enumerate(sample.masks)]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    np.testing.assert_array_equal(CocoJson(tmp_path / "images", tmp_path / "coco.json")[0].masks, sample.masks)

    write_sa1b(tmp_path / "images" / "a.json", "a.png", width, height,
               [{"segmentation": mask_to_rle(m), "area": int(m.sum()), "bbox": [0, 0, 1, 1], "predicted_iou": 1.0,
                 "point_coords": [[0, 0]], "stability_score": 1.0, "crop_box": [0, 0, width, height]}
                for m in sample.masks])
    np.testing.assert_array_equal(SA1BFolder(tmp_path / "images")[0].masks, sample.masks)

    (tmp_path / "labels").mkdir()
    lines = []
    for mask in sample.masks:  # outer contour of each person, as polygon labels are made
        contour = max(cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0], key=len)
        lines.append("0 " + " ".join(f"{x / width:.6f} {y / height:.6f}" for x, y in contour[:, 0]))
    (tmp_path / "labels" / "a.txt").write_text("\n".join(lines))
    polygons = YoloSegFolder(tmp_path)[0].masks
    for got, want in zip(polygons, sample.masks):
        assert (got & want).sum() / (got | want).sum() > 0.95

    # open_dataset tells the formats apart by their layout.
    for spec, kind in ((tmp_path / "coco.json", CocoJson), (tmp_path / "images", SA1BFolder), (tmp_path, YoloSegFolder)):
        dataset = open_dataset(str(spec), "train", shared_data)
        assert type(dataset) is kind and len(dataset) == 1 and len(dataset[0].masks) == len(sample.masks)


def test_open_dataset_by_name_or_path(tmp_path, shared_data):
    assert open_dataset("pennfudan", "eval", shared_data).names == shared_dataset("pennfudan", "eval", shared_data).names
    assert len(open_dataset(str(shared_data / "pennfudan"), "eval", tmp_path)) == 170  # a path is read whole
    assert len(open_dataset(str(shared_data / "dsb2018"), "train", tmp_path)) == 664
    bsds = open_dataset(str(shared_data / "bsds500"), "eval", tmp_path)
    assert isinstance(bsds, BSDS500) and len(bsds) == 200
    with pytest.raises(SegAnyError, match="neither a dataset name"):
        open_dataset(str(tmp_path / "missing"), "train", shared_data)
    with pytest.raises(SegAnyError, match="not a dataset layout segany reads"):
        open_dataset(str(tmp_path), "train", shared_data)


def test_label_map_folders_and_bad_files(tmp_path):
    (tmp_path / "img").mkdir(), (tmp_path / "lab").mkdir()
    labels = np.zeros((20, 30), np.uint16)
    labels[2:5, 3:9], labels[10:15, 10:20] = 300, 7  # ids need not be small or ordered
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "img" / "x.png")
    cv2.imwrite(str(tmp_path / "lab" / "x.png"), labels)
    masks = LabelMapFolder(tmp_path / "img", tmp_path / "lab")[0].masks
    np.testing.assert_array_equal(masks, instance_masks(labels))
    assert [int(m.sum()) for m in masks] == [50, 18]

    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "img" / "y.png")
    with pytest.raises(SegAnyError, match="no label map for 1 image"):
        LabelMapFolder(tmp_path / "img", tmp_path / "lab")
    with pytest.raises(SegAnyError, match="split must be one of train, eval, all"):
        LabelMapFolder(tmp_path / "img", tmp_path / "img", split="test")
    (tmp_path / "labels").mkdir(), (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "images" / "z.png")
    (tmp_path / "labels" / "z.txt").write_text("3 0.1 0.1 0.5\n")
    with pytest.raises(SegAnyError, match=r"z.txt:1: expected 'class x1 y1"):
        YoloSegFolder(tmp_path)[0]
    with pytest.raises(SegAnyError, match="unknown dataset 'nope'"):
        shared_dataset("nope", "train", tmp_path)


def test_clothing_co_parsing_pieces_labels_and_person(tmp_path):
    """A photo with a coat, two shoes (one label, two pieces) and a speck below the minimum area."""
    from scipy.io import savemat

    (tmp_path / "photos").mkdir()
    (tmp_path / "annotations" / "pixel-level").mkdir(parents=True)
    labels = np.zeros((120, 80), dtype=np.uint8)
    labels[10:70, 20:60] = 13  # coat
    labels[100:115, 10:30] = 39  # left shoe
    labels[100:115, 50:70] = 39  # right shoe
    labels[0:3, 0:3] = 5  # 9 pixels: an annotation sliver
    savemat(tmp_path / "annotations" / "pixel-level" / "0001.mat", {"groundtruth": labels})
    Image.fromarray(np.full((120, 80, 3), 90, np.uint8)).save(tmp_path / "photos" / "0001.jpg")
    Image.fromarray(np.full((120, 80, 3), 90, np.uint8)).save(tmp_path / "photos" / "1500.jpg")  # not annotated
    dataset = open_dataset(str(tmp_path), "train", tmp_path)
    assert dataset.names == ["0001"]
    masks = dataset[0].masks
    areas = sorted(int(m.sum()) for m in masks)
    # coat 2400, each shoe 300, both shoes 600, the person: everything labelled (the sliver too)
    assert areas == [300, 300, 600, 2400, 2400 + 600 + 9]


def test_pet_trimaps_give_the_animal_with_its_outline_band(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "trimaps").mkdir()
    trimap = np.full((60, 90), 2, np.uint8)
    trimap[10:50, 20:70] = 3  # the unsure band
    trimap[12:48, 22:68] = 1  # the animal
    Image.fromarray(trimap).save(tmp_path / "trimaps" / "Bengal_1.png")
    Image.fromarray(np.zeros((60, 90, 3), np.uint8)).save(tmp_path / "images" / "Bengal_1.jpg")
    (tmp_path / "images" / "Bengal_2.mat").write_bytes(b"")  # stray files are not images
    sample = open_dataset(str(tmp_path), "train", tmp_path)[0]
    assert sample.masks.shape == (1, 60, 90) and sample.masks[0].sum() == 40 * 50


def test_a_folder_of_images_alone_is_a_dataset_without_masks(tmp_path):
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "a.jpg")
    Image.fromarray(np.zeros((20, 10, 3), np.uint8)).save(tmp_path / "b.png")
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = open_dataset(str(tmp_path), "train", tmp_path)
    assert dataset.names == ["a", "b"]
    assert dataset[1].masks.shape == (0, 20, 10)
