"""The automatic stage of the data engine on Ray Data: the same generator as `segany auto`, over
as many images and machines as the Ray cluster has.

    sources --(CPU tasks: read, decode)--> images --(actor pool: one model per actor)--> SA-1B
    documents --(CPU tasks: batches of `shard_size`)--> shards + manifest parts

Ray Data streams: each stage holds a bounded number of blocks in flight, so memory stays
bounded whatever the input size. An image that cannot be read or segmented becomes a manifest
row with its error; a dead actor (process killed, node lost) is restarted and its batch retried
(Ray Data's defaults for actor pools: unlimited restarts and task retries).
"""

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
from tqdm import tqdm

from ..errors import SegAnyError
from .shards import FORMATS, read_manifest, remove_orphans, write_batch, write_manifest_table
from .sources import ImageSource


@dataclass
class EngineConfig:
    model: str = "default"  # what each actor loads (a path every node can read, or a registered name)
    generator: Dict[str, Any] = field(default_factory=dict)  # SamAutomaticMaskGenerator keyword arguments
    min_area: int = 0  # drop masks smaller than this (pixels) before writing
    shard_size: int = 100  # images per shard
    shard_format: str = "tar"  # or "parquet"
    dataset: bool = False  # also write image + JSON pairs for `segany train` (OUT/dataset)
    workers: int = 1  # model actors
    threads: int = 1  # torch threads (and Ray CPUs) per actor
    gpus: float = 0.0  # GPUs per actor (0: CPU)

    def check(self) -> None:
        if self.shard_format not in FORMATS:
            raise SegAnyError(f"shard format must be one of {', '.join(FORMATS)}, got {self.shard_format!r}")
        if self.workers < 1 or self.threads < 1 or self.shard_size < 1:
            raise SegAnyError("workers, threads and shard size must be at least 1")


@dataclass
class Summary:
    images: int  # in the input
    skipped: int  # already in the manifest
    done: int  # segmented in this run
    errors: int  # failed in this run
    masks: int  # written in this run
    seconds: float  # wall time of this run

    def __str__(self) -> str:
        rate = f"{self.done / self.seconds:.2f} images/s, {self.masks / self.seconds:.1f} masks/s" \
            if self.seconds > 0 else ""
        return (f"{self.done} image(s) segmented ({self.masks} masks), {self.errors} failed, {self.skipped} already "
                f"done, of {self.images}; {self.seconds:.1f} s, {rate}")


class Segmenter:
    """One Ray actor: a model loaded once, the generator applied to one image at a time."""

    def __init__(self, config: EngineConfig) -> None:
        import torch

        from ..amg import SamAutomaticMaskGenerator
        from ..checkpoint import load_model

        torch.set_num_threads(config.threads)
        device = "cuda" if config.gpus > 0 and torch.cuda.is_available() else "cpu"
        self.generator = SamAutomaticMaskGenerator(load_model(config.model, device=device), output_mode="coco_rle",
                                                   **config.generator)
        self.min_area = config.min_area

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, list]:
        from ..data.sa1b import sa1b_document

        rows = []
        for row in _rows(batch):
            status, error, masks, text, began = "error", row["error"], 0, "", time.perf_counter()
            if not error:
                image = row["image"]
                try:
                    records = [r for r in self.generator.generate(image) if r["area"] >= self.min_area]
                    name = os.path.basename(row["url"])
                    text = json.dumps(sa1b_document(name, image.shape[1], image.shape[0], records))
                    status, masks = "done", len(records)
                except Exception as err:  # one bad image must not stop millions: recorded, reported
                    error = f"{type(err).__name__}: {err}"
            rows.append({"image_id": row["image_id"], "url": row["url"], "status": status, "masks": masks,
                         "seconds": time.perf_counter() - began, "error": error, "json": text})
        return _columns(rows)


def _load(row: Dict[str, Any]) -> Dict[str, Any]:
    """Read and decode one image (a CPU task); an unreadable one carries its error instead."""
    import fsspec

    from ..image_io import decode_image

    try:
        with fsspec.open(row["url"], "rb") as file:
            image, error = decode_image(file.read(), row["url"]), ""
    except Exception as err:  # missing, unreadable, corrupt: recorded in the manifest
        image, error = np.zeros((0, 0, 3), dtype=np.uint8), f"{type(err).__name__}: {err}"
    return {"image_id": row["image_id"], "url": row["url"], "image": image, "error": error}


def _write(batch: Dict[str, np.ndarray], out: str, shard_format: str, dataset: bool) -> Dict[str, list]:
    return _columns(write_batch(out, _rows(batch), shard_format, dataset))


def _rows(batch: Dict[str, np.ndarray]) -> List[Dict[str, Any]]:
    """A Ray batch (column -> array) as rows of Python values (arrays, such as images, kept)."""
    return [{name: value.item() if isinstance(value, np.generic) else value for name, value in zip(batch, values)}
            for values in zip(*batch.values())]


def _columns(rows: List[Dict[str, Any]]) -> Dict[str, list]:
    return {name: [row[name] for row in rows] for name in rows[0]}


def run_engine(sources: List[ImageSource], out: str, config: EngineConfig, address: Optional[str] = None,
               progress: bool = True) -> Summary:
    """Segment every image of `sources` not yet in OUT's manifest; returns what this run did."""
    import ray

    config.check()
    began = time.perf_counter()
    remove_orphans(out)
    known = read_manifest(out)
    todo = [s for s in sources if s.image_id not in known]
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # our progress bar says what its INFO lines say
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:  # this machine: actors take their CPUs, reading and writing tasks the rest
            cpus = max(os.cpu_count() or 1, config.workers * config.threads + 2)
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    done = errors = masks = 0
    if todo:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.execution_options.preserve_order = False
        # Blocks of a shard's worth of images: small tasks, and decoded images stay few per block.
        ds = ray.data.from_items([{"image_id": s.image_id, "url": s.url} for s in todo],
                                 override_num_blocks=math.ceil(len(todo) / config.shard_size))
        ds = ds.map(_load)
        ds = ds.map_batches(Segmenter, fn_constructor_args=(config,), batch_size=1,
                            compute=ray.data.ActorPoolStrategy(size=config.workers),
                            num_cpus=config.threads, num_gpus=config.gpus or None)
        ds = ds.map_batches(_write, batch_size=config.shard_size, fn_kwargs={
            "out": out, "shard_format": config.shard_format, "dataset": config.dataset}, num_cpus=0.5)
        with tqdm(total=len(todo), desc="segany engine", unit="image", disable=not progress) as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                statuses = batch["status"]
                done += int((statuses == "done").sum())
                errors += int((statuses != "done").sum())
                masks += int(batch["masks"].sum())
                bar.update(len(statuses))
                seconds = max(time.perf_counter() - began, 1e-9)
                bar.set_postfix_str(f"{done / seconds:.2f} img/s, {masks / seconds:.1f} masks/s, {errors} failed")
    write_manifest_table(out, read_manifest(out).values())
    return Summary(len(sources), len(sources) - len(todo), done, errors, masks, time.perf_counter() - began)
