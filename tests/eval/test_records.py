"""Per-image records: an interrupted evaluation resumes where it stopped, with the same results."""

import numpy as np
import pytest

from segany.data import MaskDataset, Sample
from segany.errors import SegAnyError
from segany.eval.records import ImageRecords, each_image


class Counted(MaskDataset):
    """Five images; counts how many were loaded."""

    names = [f"image{i}" for i in range(5)]

    def __init__(self) -> None:
        self.loaded = 0

    def load(self, name: str) -> Sample:
        self.loaded += 1
        return Sample(name, np.zeros((4, 4, 3), np.uint8), np.zeros((0, 4, 4), bool))


def area(sample: Sample) -> dict:
    return {"name_length": len(sample.name), "values": [1.5, int(sample.name[-1])]}


class Interrupted(Exception):
    pass


def test_an_interrupted_run_resumes_with_the_same_results(tmp_path):
    path, settings = tmp_path / "task.jsonl", {"model": "m", "clicks": 3}
    whole = each_image(Counted(), None, area)

    def stop_at_image3(sample):
        if sample.name == "image3":
            raise Interrupted
        return area(sample)

    with pytest.raises(Interrupted):
        each_image(Counted(), None, stop_at_image3, ImageRecords(path, settings))
    dataset = Counted()
    assert each_image(dataset, None, area, ImageRecords(path, settings)) == whole
    assert dataset.loaded == 2  # images 0-2 were read back, not loaded
    assert len(path.read_text().splitlines()) == 1 + 5


def test_a_record_cut_short_is_dropped_and_redone(tmp_path):
    path, settings = tmp_path / "task.jsonl", {"model": "m"}
    each_image(Counted(), 3, area, ImageRecords(path, settings))
    text = path.read_text()
    path.write_text(text[: len(text) - 10])  # the last record half written
    dataset = Counted()
    assert each_image(dataset, None, area, ImageRecords(path, settings)) == each_image(Counted(), None, area)
    assert dataset.loaded == 3
    assert len(path.read_text().splitlines()) == 1 + 5


def test_other_settings_are_refused(tmp_path):
    path = tmp_path / "task.jsonl"
    first = ImageRecords(path, {"model": "a", "clicks": 3})
    assert not path.exists()  # nothing until the first record
    first.add("x", {"iou": 0.5})
    with pytest.raises(SegAnyError, match=r"task.jsonl: written by a run with other settings \(model\)"):
        ImageRecords(path, {"model": "b", "clicks": 3})
    path.write_text("not json\n")
    with pytest.raises(SegAnyError, match="not a segany per-image results file"):
        ImageRecords(path, {"model": "a"})
