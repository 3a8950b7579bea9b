"""Mask statistics (paper Figs. 5-6) on masks whose numbers are known."""

import json

import numpy as np
from PIL import Image

from segany.cli import main
from segany.data import MaskDataset, Sample
from segany.eval.statistics import concavity, dataset_statistics


class Squares(MaskDataset):
    """Two images of 100 x 200: the first with a 20 x 20 square and an L, the second empty."""

    names = ["a", "b"]

    def load(self, name: str) -> Sample:
        masks = np.zeros((3, 100, 200), dtype=bool)
        if name == "a":
            masks[0, 10:30, 40:60] = True  # centre (50, 20)
            masks[1, 50:90, 100:140] = True
            masks[1, 50:70, 120:140] = False  # an L: 40 x 40 less a 20 x 20 corner
        return Sample(name, np.zeros((100, 200, 3), np.uint8), masks)


def test_concavity_is_zero_for_convex_masks_and_the_missing_share_of_the_hull_otherwise():
    square = np.zeros((50, 50), dtype=bool)
    square[5:25, 10:40] = True
    assert concavity(square) == 0
    disc = np.hypot(*np.mgrid[-20:21, -20:21]) <= 15
    assert concavity(disc) < 0.05  # a digitised disc has stairs along its boundary
    ell = np.zeros((50, 50), dtype=bool)
    ell[0:40, 0:40] = True
    ell[0:20, 20:40] = False
    # Polygons through pixel centres: the L is 39 x 39 less 20 x 20; its hull cuts the corner
    # by the diagonal from (19, 0) to (39, 20).
    assert abs(concavity(ell) - (1 - (39 * 39 - 20 * 20) / (39 * 39 - 20 * 20 / 2))) < 0.005
    ring = np.zeros((50, 50), dtype=bool)
    ring[5:45, 5:45] = True
    ring[15:35, 15:35] = False  # a hole makes a mask concave
    assert abs(concavity(ring) - 21 * 21 / (39 * 39)) < 0.02
    assert concavity(np.zeros((5, 5), dtype=bool)) == 0


def test_dataset_statistics_count_size_shape_and_place():
    stats = dataset_statistics(Squares(), progress=False)
    assert stats.masks_per_image.tolist() == [2, 0]  # empty masks are not masks
    np.testing.assert_allclose(stats.relative_sizes, np.sqrt([400 / 20000, 1200 / 20000]))
    assert stats.concavities[0] == 0 and stats.concavities[1] > 0.1
    np.testing.assert_allclose(stats.centres[0], [50 / 200, 20 / 100])
    assert stats.summary()["masks"] == 2 and stats.summary()["mean_masks_per_image"] == 1


def test_eval_stats_writes_plots_and_a_summary(tmp_path, shared_data):
    args = ["eval", "stats", "--data", "pennfudan", "--data-root", str(shared_data), "-o", str(tmp_path)]
    assert main(args) == 0
    summary = json.loads((tmp_path / "results.json").read_text())["scores"]
    assert (summary["images"], summary["masks"]) == (170, 423)  # the counts of the shared data README
    for name in ("masks_per_image", "relative_size", "concavity", "centres"):
        assert Image.open(tmp_path / f"{name}.png").size[0] > 300
    assert main(["eval", "stats", "--data", str(tmp_path / "none"), "-o", str(tmp_path)]) == 2
