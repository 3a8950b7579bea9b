"""Self-training data: automatic masks of training images written as an SA-1B folder, resumable."""

import numpy as np
import pytest

from segany import load_model
from segany.amg import SamAutomaticMaskGenerator
from segany.cli import main
from segany.data import SA1BFolder, open_dataset, shared_dataset
from segany.errors import SegAnyError
from segany.masks import masks_to_rles
from segany.train.pseudo_labels import label_ious, pseudo_label


@pytest.fixture(scope="module")
def generator():
    # The bundled model with the filters loosened, so that a coarse grid keeps some masks.
    return SamAutomaticMaskGenerator(load_model("default"), points_per_side=4, pred_iou_thresh=0.0,
                                     stability_score_thresh=0.0, output_mode="coco_rle")


def test_masks_are_written_as_a_dataset_and_resume_skips_done_images(tmp_path, shared_data, generator):
    pennfudan = shared_dataset("pennfudan", "train", shared_data)
    run = pseudo_label(generator, {"pennfudan": pennfudan}, tmp_path, limit=2, progress=False)
    images, masks = run.images, run.masks
    assert images == 2 and masks > 0
    written = open_dataset(str(tmp_path), "train", shared_data)
    assert isinstance(written, SA1BFolder)
    assert written.names == [f"pennfudan-{name}" for name in pennfudan.names[:2]]
    assert sum(len(s.masks) for s in written) == masks
    first = written[0]
    np.testing.assert_array_equal(first.image, pennfudan[0].image)  # lossless copy of the image
    expected = [r["segmentation"] for r in generator.generate(pennfudan[0].image)]
    assert len(first.masks) == len(expected)
    # Each written mask measured against the labels the generator never saw.
    assert len(run.label_ious) == masks
    assert run.label_ious[: len(first.masks)] == label_ious(masks_to_rles(first.masks), pennfudan[0].masks)

    again = pseudo_label(generator, {"pennfudan": pennfudan}, tmp_path, limit=2, progress=False)
    assert (again.images, again.masks, again.label_ious) == (0, 0, [])
    run = pseudo_label(generator, {"pennfudan": pennfudan}, tmp_path, limit=3, progress=False)
    assert run.images == 1 and (tmp_path / "done.txt").read_text().split() == written.names + [
        f"pennfudan-{pennfudan.names[2]}"]


def test_images_without_kept_masks_are_done_but_not_written(tmp_path, shared_data):
    strict = SamAutomaticMaskGenerator(load_model("default"), points_per_side=2, pred_iou_thresh=1.0,
                                       output_mode="coco_rle")
    pennfudan = shared_dataset("pennfudan", "train", shared_data)
    run = pseudo_label(strict, {"p": pennfudan}, tmp_path, limit=1, progress=False)
    assert (run.images, run.masks) == (0, 0)
    assert (tmp_path / "done.txt").read_text().split() == [f"p-{pennfudan.names[0]}"]
    assert not list(tmp_path.glob("*.json"))
    with pytest.raises(SegAnyError, match="output_mode='coco_rle'"):
        pseudo_label(SamAutomaticMaskGenerator(load_model("default")), {"p": pennfudan}, tmp_path)


def test_cli_writes_a_folder_that_training_reads(tmp_path, shared_data, capsys):
    out = tmp_path / "pseudo"
    assert main(["pseudo-label", "--data", "coco128-seg", "--data-root", str(shared_data), "--limit", "1",
          "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 image(s) written" in printed and "against the withheld labels" in printed
    assert len(open_dataset(str(out), "train", shared_data)) == 1


def test_label_ious_match_each_mask_with_its_best_label():
    labels = np.zeros((2, 8, 8), dtype=bool)
    labels[0, :4, :4] = True  # 16 pixels
    labels[1, 4:, :] = True  # 32 pixels
    masks = np.zeros((3, 8, 8), dtype=bool)
    masks[0, :4, :4] = True  # exactly the first label
    masks[1, 4:, :4] = True  # half of the second label, nothing of the first
    masks[2, :2, 6:] = True  # touches no label
    assert label_ious(masks_to_rles(masks), labels) == pytest.approx([1.0, 0.5, 0.0])
    assert label_ious(masks_to_rles(masks), labels[:0]) == []  # an image without labels
