"""The Ray engine against one process: images/s and masks/s of `segany engine run` with 1 and 2
model actors on this machine, beside the official package's SamAutomaticMaskGenerator and
segany's own in one process, same weights (the bundled model), same settings; and the peak
memory of each actor process.

    python benchmarks/bench_engine.py [--images 16] [--points-per-side 16]

Each engine run starts from an empty output folder and includes Ray's start, the actors' model
loading and the writing of shards, as a user's run would.
"""

import argparse
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch

from segany import SamAutomaticMaskGenerator
from segany.checkpoint import convert_checkpoint, load_model
from segany.engine import EngineConfig, list_images, run_engine
from segany.image_io import read_image
from segany.testing import official as reference

REPO = Path(__file__).resolve().parents[1]


class ActorMemory:
    """Peak RSS of each Ray model actor process (sampled every 0.2 s)."""

    def __init__(self) -> None:
        self.peaks = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    if b"Segmenter" not in (proc / "cmdline").read_bytes():
                        continue
                    status = (proc / "status").read_text()
                except OSError:  # the process ended meanwhile
                    continue
                rss = next((int(line.split()[1]) * 1024 for line in status.splitlines()
                            if line.startswith("VmRSS:")), 0)
                self.peaks[proc.name] = max(self.peaks.get(proc.name, 0), rss)


def in_process(generator, paths) -> tuple:
    began, masks = time.perf_counter(), 0
    for path in paths:
        masks += len(generator.generate(read_image(path)))
    return time.perf_counter() - began, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--points-per-side", type=int, default=16)
    args = parser.parse_args()
    data = Path(os.environ.get("SEGANY_SHARED_DATA", REPO.parent / "shared" / "data"))
    settings = {"points_per_side": args.points_per_side, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}

    import ray

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "images"
        folder.mkdir()
        for path in sorted((data / "pennfudan" / "PNGImages").glob("*.png"))[: args.images]:
            shutil.copy(path, folder / path.name)
        paths = sorted(folder.iterdir())
        rows = []

        torch.set_num_threads(2)
        official_path = tmp / "default.pth"
        convert_checkpoint("default", official_path)
        model = load_model("default")
        official = reference.build_reference(model.config)
        official.load_state_dict(torch.load(official_path, weights_only=True))
        sam = reference.import_official()
        seconds, masks = in_process(sam.SamAutomaticMaskGenerator(official.eval(), **settings), paths)
        rows.append(("official, 1 process, 2 threads", seconds, masks, None))
        seconds, masks = in_process(SamAutomaticMaskGenerator(model, output_mode="coco_rle", **settings), paths)
        rows.append(("segany, 1 process, 2 threads", seconds, masks, None))

        for workers, threads in ((1, 2), (2, 1)):
            ray.init(num_cpus=workers * threads + 2, include_dashboard=False, log_to_driver=False)
            config = EngineConfig(generator=settings, shard_size=4, workers=workers, threads=threads)
            with ActorMemory() as memory:
                summary = run_engine(list_images(str(folder)), str(tmp / f"out{workers}"), config, progress=False)
            ray.shutdown()
            assert summary.done == len(paths), summary
            peak = max(memory.peaks.values()) / 2**20 if memory.peaks else float("nan")
            rows.append((f"segany engine, {workers} actor(s) x {threads} thread(s)", summary.seconds, summary.masks,
                         peak))

    print(f"bundled model, {len(paths)} PennFudan images, {args.points_per_side}x{args.points_per_side} grid, "
          f"filters off; torch {torch.__version__}, ray {ray.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs\n")
    print("| run | seconds | images/s | masks/s | peak RSS per actor MiB | speed-up vs official |")
    print("|---|---:|---:|---:|---:|---:|")
    official_rate = len(paths) / rows[0][1]
    for name, seconds, masks, peak in rows:
        rate = len(paths) / seconds
        print(f"| {name} | {seconds:.1f} | {rate:.2f} | {masks / seconds:.1f} | "
              f"{'-' if peak is None else f'{peak:.0f}'} | {rate / official_rate:.2f}x |")


if __name__ == "__main__":
    main()
