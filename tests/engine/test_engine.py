"""The Ray pipeline on a local Ray with 2 model actors, over real images of ../shared/data."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segany import cli
from segany.data import open_dataset
from segany.engine import EngineConfig, list_images, read_manifest, read_shard, run_engine
from segany.errors import SegAnyError

GENERATOR = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
OPTIONS = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def images(shared_data, tmp_path_factory) -> Path:
    """24 real photographs (PennFudan, COCO128-seg) and one corrupt file."""
    folder = tmp_path_factory.mktemp("engine") / "images"
    folder.mkdir()
    for path in sorted((shared_data / "pennfudan" / "PNGImages").glob("*.png"))[:12]:
        shutil.copy(path, folder / path.name)
    for path in sorted((shared_data / "coco128-seg" / "images").glob("*.jpg"))[:12]:
        shutil.copy(path, folder / path.name)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def shard_documents(out: Path) -> Counter:
    """member name -> how many shards hold it; documents in `.docs`."""
    fs = fsspec.filesystem("file")
    names: Counter = Counter()
    names.docs = {}
    for shard in sorted((out / "shards").iterdir()):
        for name, document in read_shard(fs, str(shard)):
            names[name] += 1
            names.docs[name] = document
    return names


def test_manifest_accounts_for_every_image_and_equals_segany_auto(ray_local, images, micro_checkpoint, tmp_path):
    config = EngineConfig(model=str(micro_checkpoint), generator=GENERATOR, shard_size=5, workers=2)
    summary = run_engine(list_images(str(images)), str(tmp_path / "out"), config, progress=False)
    assert (summary.images, summary.done, summary.errors, summary.skipped) == (25, 24, 1, 0)

    manifest = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    assert sorted(row["image_id"] for row in manifest) == sorted(p.name for p in images.iterdir())
    [bad] = [row for row in manifest if row["status"] == "error"]
    assert bad["image_id"] == "corrupt.jpg" and "cannot read image" in bad["error"] and bad["shard"] == ""
    assert sum(row["masks"] for row in manifest) == summary.masks > 0

    shards = shard_documents(tmp_path / "out")
    assert set(shards.values()) == {1} and len(shards) == 24  # every image once
    assert cli.main(["auto", str(images), "-o", str(tmp_path / "auto"), "--model", str(micro_checkpoint)]
                    + OPTIONS) == 1  # the corrupt file
    for name, document in shards.docs.items():
        assert document == json.loads((tmp_path / "auto" / name).read_text()), name

    again = run_engine(list_images(str(images)), str(tmp_path / "out"), config, progress=False)
    assert (again.skipped, again.done, again.errors) == (25, 0, 0)  # errors are recorded, not redone


def test_resume_after_the_job_is_killed(ray_local, images, micro_checkpoint, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "segany", "engine", "run", str(images), "-o", str(out), "--model",
               str(micro_checkpoint), "--shard-size", "2", "--workers", "2", "--points-per-side", "8",
               "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list((out / "manifest").glob("*.jsonl"))) < 2 if (out / "manifest").exists() else True:
        assert process.poll() is None and time.monotonic() < deadline, "the job ended before it could be killed"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished_before = len(read_manifest(str(out)))
    assert 0 < finished_before < 25

    config = EngineConfig(model=str(micro_checkpoint), generator={**GENERATOR, "points_per_side": 8},
                          shard_size=2, workers=2)
    summary = run_engine(list_images(str(images)), str(out), config, progress=False)
    assert summary.skipped == finished_before and summary.done + summary.errors == 25 - finished_before
    manifest = read_manifest(str(out))
    assert len(manifest) == 25 and Counter(r["status"] for r in manifest.values()) == {"done": 24, "error": 1}
    shards = shard_documents(out)
    assert len(shards) == 24 and set(shards.values()) == {1}  # no duplicates, no gaps
    referenced = {row["shard"] for row in manifest.values() if row["shard"]}
    assert {f"shards/{p.name}" for p in (out / "shards").iterdir()} == referenced  # no orphans left


def test_lists_parquet_shards_and_training_dataset(ray_local, images, micro_checkpoint, tmp_path):
    listed = sorted(p.name for p in images.iterdir() if p.name != "corrupt.jpg")[:6]
    (tmp_path / "list.txt").write_text("# six images\n" + "".join(f"{images / n}\n" for n in listed))
    config = EngineConfig(model=str(micro_checkpoint), generator=GENERATOR, min_area=500, shard_size=4,
                          shard_format="parquet", dataset=True, workers=2)
    summary = run_engine(list_images(str(tmp_path / "list.txt")), str(tmp_path / "out"), config, progress=False)
    assert (summary.done, summary.errors) == (6, 0)
    shards = shard_documents(tmp_path / "out")
    assert len(shards) == 6 and all(p.suffix == ".parquet" for p in (tmp_path / "out" / "shards").iterdir())
    assert all(a["area"] >= 500 for d in shards.docs.values() for a in d["annotations"])
    dataset = open_dataset(str(tmp_path / "out" / "dataset"), "all", tmp_path)
    assert len(dataset) == 6
    sample = dataset[0]
    assert sample.masks.shape[1:] == sample.image.shape[:2] and len(sample.masks) > 0


def test_sources(images, tmp_path):
    assert len(list_images(str(images))) == 25
    assert [s.image_id for s in list_images(str(images / "FudanPed0000*.png"))][:2] == ["FudanPed00001.png",
                                                                                      "FudanPed00002.png"]
    nested = tmp_path / "nested" / "a"
    nested.mkdir(parents=True)
    shutil.copy(images / "FudanPed00001.png", nested / "x.png")
    (tmp_path / "nested" / ".hidden").mkdir()
    shutil.copy(images / "FudanPed00001.png", tmp_path / "nested" / ".hidden" / "y.png")
    [source] = list_images(str(tmp_path / "nested"))
    assert source.image_id == "a/x.png"
    pq.write_table(pa.table({"path": ["a/x.png"]}), tmp_path / "nested" / "list.parquet")
    [listed] = list_images(str(tmp_path / "nested" / "list.parquet"))
    assert listed.url == str(nested / "x.png")
    shutil.copy(images / "FudanPed00001.png", nested / "x.jpg")
    with pytest.raises(SegAnyError, match="would both be written as a/x.json"):
        list_images(str(tmp_path / "nested"))
    with pytest.raises(SegAnyError, match="no such folder"):
        list_images(str(tmp_path / "missing"))
    pq.write_table(pa.table({"file": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(SegAnyError, match="column named 'path' or 'url'"):
        list_images(str(tmp_path / "bad.parquet"))


def test_a_killed_actor_is_restarted_and_its_image_retried(ray_local, images, micro_checkpoint, tmp_path):
    killed = []

    def kill_one_actor() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    if b"Segmenter" in (proc / "cmdline").read_bytes():
                        time.sleep(1.0)  # let it take work first
                        os.kill(int(proc.name), signal.SIGKILL)
                        killed.append(proc.name)
                        return
                except (OSError, ProcessLookupError):
                    continue
            time.sleep(0.1)

    killer = threading.Thread(target=kill_one_actor)
    killer.start()
    config = EngineConfig(model=str(micro_checkpoint), generator={**GENERATOR, "points_per_side": 8},
                          shard_size=3, workers=2)
    summary = run_engine(list_images(str(images)), str(tmp_path / "out"), config, progress=False)
    killer.join()
    assert killed, "no actor process was found to kill"
    assert (summary.done, summary.errors) == (24, 1)
    shards = shard_documents(tmp_path / "out")
    assert len(shards) == 24 and set(shards.values()) == {1}


def test_cli_errors(tmp_path, capsys):
    assert cli.main(["engine", "run", str(tmp_path / "missing"), "-o", str(tmp_path / "out")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.main(["engine", "run", str(tmp_path), "-o", str(tmp_path / "out"), "--device", "cuda"]) == 2
    assert "--gpus" in capsys.readouterr().err


def test_sources_on_another_filesystem(images):
    """Any fsspec filesystem: ids relative to the root, URLs that keep their protocol."""
    memory = fsspec.filesystem("memory")
    memory.pipe("/collection/a/one.png", (images / "FudanPed00001.png").read_bytes())
    memory.pipe("/collection/two.jpg", b"not read while listing")
    memory.pipe("/collection/list.txt", b"a/one.png\nmemory://collection/two.jpg\n")
    found = list_images("memory://collection")
    assert [(s.image_id, s.url) for s in found] == [("a/one.png", "memory:///collection/a/one.png"),
                                                   ("two.jpg", "memory:///collection/two.jpg")]
    with fsspec.open(found[0].url, "rb") as file:
        assert file.read() == (images / "FudanPed00001.png").read_bytes()
    assert [s.url for s in list_images("memory://collection/list.txt")] == [
        "memory:///collection/a/one.png", "memory://collection/two.jpg"]
    assert [s.image_id for s in list_images("memory://collection/*.jpg")] == ["two.jpg"]
