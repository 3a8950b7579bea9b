"""Outputs are all-or-nothing, interrupted runs leave nothing behind, one bad image never blocks the rest."""

import errno
import io
import json
import os
import pathlib
import shutil
import stat

import numpy as np
import pytest
from PIL import Image

import segany
from conftest import REPO
from hostile import hostile_images, micro_model_file  # noqa: F401 (fixtures)
from segany.cli import main
from segany.masks import mask_to_rle
from segany.server.catalog import Catalog
from segany.server.export import export_project
from segany.server.store import MaskIn, Store

IMAGE = REPO / "examples" / "chelsea.png"


def run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fail_on_write(monkeypatch, failing_call: int):
    """Make the `failing_call`-th Path.write_bytes fail as a full disk does."""
    calls = {"n": 0}
    original = pathlib.Path.write_bytes

    def write_bytes(self, data):
        calls["n"] += 1
        if calls["n"] == failing_call:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)


@pytest.mark.parametrize("failing_call", [1, 3, 5])
def test_a_full_disk_leaves_no_partial_set_and_names_the_file(capsys, tmp_path, monkeypatch, micro_model_file,
                                                              failing_call):
    fail_on_write(monkeypatch, failing_call)
    code, _, err = run(capsys, "segment", IMAGE, "--point", "200,150", "--multimask", "--model", micro_model_file,
                       "-o", tmp_path / "out")
    names = ["chelsea_mask0.png", "chelsea_mask1.png", "chelsea_mask2.png", "chelsea_overlay.png", "chelsea.json"]
    assert code == 2
    assert err.strip() == f"segany: error: {tmp_path / 'out' / names[failing_call - 1]}: No space left on device"
    assert list((tmp_path / "out").iterdir()) == []  # no masks without their JSON, no temporary files


def test_a_closed_pipe_is_one_line(capsys, tmp_path, monkeypatch, micro_model_file):
    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    code = main(["segment", str(IMAGE), "--point", "200,150", "--model", str(micro_model_file), "-o",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "segany: error: output closed before the end (broken pipe)"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["chelsea.json", "chelsea_mask.png",
                                                                    "chelsea_overlay.png"]


def test_auto_skips_bad_images_and_segments_the_rest(capsys, tmp_path, micro_model_file, hostile_images):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(IMAGE, folder / "cat.png")
    for name in ("bomb.png", "short.png", "truncated.jpg", "text.png"):
        shutil.copy(hostile_images[name], folder / name)
    code, out, err = run(capsys, "auto", folder, "--points-per-side", "2", "--model", micro_model_file,
                         "-o", tmp_path / "out")
    assert code == 1
    skipped = sorted(line for line in err.splitlines() if line.startswith("segany: skipping"))
    assert [line.split(": cannot read image")[0] for line in skipped] == sorted(
        f"segany: skipping {folder / name}" for name in ("bomb.png", "short.png", "text.png", "truncated.jpg"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cat.json"]
    assert "1 image(s) segmented" in out and "4 failed" in out


def test_an_interrupted_auto_leaves_nothing_that_the_next_run_takes_in(capsys, tmp_path, micro_model_file):
    folder = tmp_path / "work"  # input and output in one folder
    folder.mkdir()
    shutil.copy(IMAGE, folder / "cat.png")
    stale = [folder / ".cat_overlay.png.k3j_x9q2.tmp.png", folder / ".cat.json.ab12cd34.tmp.json"]
    for path in stale:
        path.write_bytes(b"")  # what kill -9 during a write leaves
    shutil.copy(IMAGE, folder / ".hidden.png")
    code, _, err = run(capsys, "auto", folder, "--overlay", "--points-per-side", "2", "--model", micro_model_file,
                       "-o", folder)
    assert code == 0
    assert sorted(line for line in err.strip().splitlines() if "removed" in line) == sorted(
        f"segany: removed {path}, left by an interrupted run" for path in stale)
    assert sorted(p.name for p in folder.iterdir()) == [".hidden.png", "cat.json", "cat.png", "cat_overlay.png"]


def test_outputs_have_one_file_mode(tmp_path, capsys, micro_model_file):
    previous = os.umask(0o022)
    try:
        segany.save_model(segany.load_model(micro_model_file), tmp_path / "m.safetensors")
        assert run(capsys, "segment", IMAGE, "--point", "200,150", "--model", micro_model_file, "-o", tmp_path)[0] == 0
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert set(modes.values()) == {0o644}, modes


def square(height, width, size=10):
    mask = np.zeros((height, width), dtype=bool)
    mask[:size, :size] = True
    return mask


def test_export_keeps_images_that_differ_only_in_suffix_and_skips_unreadable_ones(capsys, tmp_path,
                                                                                   hostile_images):
    images = tmp_path / "images"
    images.mkdir()
    Image.open(IMAGE).convert("RGB").save(images / "a.jpg")
    Image.open(IMAGE).save(images / "a.png")
    Image.open(IMAGE).save(images / "b.png")
    shutil.copy(hostile_images["bomb.png"], images / "bomb.png")
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store(db)
    store.add_annotator("alice")
    for name, count in (("a.jpg", 40), ("a.png", 1), ("b.png", 2)):
        masks = [MaskIn(rle=mask_to_rle(square(300, 451, 5 + i))) for i in range(count)]
        store.add_masks(name, 1, masks, 300, 451)
    code, out, err = run(capsys, "annotations", "export", "--images", images, "--db", db, "-o", tmp_path / "out")
    assert code == 1
    assert "bomb.png: not a readable image, left out of the export" in err
    assert "2 images share a name with another but for the suffix" in err
    counts = {p.name: len(json.loads(p.read_text())["annotations"]) for p in (tmp_path / "out" / "sa1b").iterdir()}
    assert counts == {"a.jpg.json": 40, "a.png.json": 1, "b.json": 2}
    coco = json.loads((tmp_path / "out" / "coco.json").read_text())
    assert len(coco["annotations"]) == 43 and "bomb.png" not in {i["file_name"] for i in coco["images"]}
    assert export_project(store, Catalog(images), tmp_path / "again")["unreadable"] == ["bomb.png"]
