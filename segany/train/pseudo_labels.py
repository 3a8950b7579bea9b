"""Self-training data: the fully automatic stage of the data engine, run on training images.

The automatic mask generator keeps confident, stable, non-duplicate masks (its predicted-IoU and
stability filters and NMS); every image with at least one is written as an SA-1B folder entry,
the image as `<dataset>-<name>.png` beside `<dataset>-<name>.json`, which `segany train` reads
as a dataset (`datasets: {that/folder: weight}`). `done.txt` lists the images handled, so an
interrupted run continues where it stopped. Where the images have labels (withheld from the
generator), each written mask's IoU with its best-matching label says how good the pseudo-labels are.
"""

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from tqdm import tqdm

from ..amg import SamAutomaticMaskGenerator
from ..data import MaskDataset
from ..data.sa1b import sa1b_bytes
from ..errors import SegAnyError
from ..fileio import write_files_atomic
from ..image_io import png_bytes
from ..masks import masks_to_rles, rle_ious

DONE_FILE = "done.txt"


@dataclass
class PseudoLabelRun:
    """What one call of `pseudo_label` wrote."""

    images: int = 0
    masks: int = 0
    # Per written mask of a labelled image: its IoU with the best-matching withheld label.
    label_ious: List[float] = field(default_factory=list)


def pseudo_label(generator: SamAutomaticMaskGenerator, datasets: Dict[str, MaskDataset], output: Path,
                 limit: Optional[int] = None, progress: bool = True,
                 skipped: Optional[List[str]] = None) -> PseudoLabelRun:
    """Label the first `limit` images of each dataset (all without limit) into `output`.

    datasets: prefix of the written names -> dataset. Counts what this call wrote; images without
    a kept mask are marked done but not written. Images that cannot be read are skipped (not
    marked done), their messages appended to `skipped`.
    """
    if generator.output_mode != "coco_rle":
        raise SegAnyError("pseudo_label needs a generator with output_mode='coco_rle'")
    output.mkdir(parents=True, exist_ok=True)
    done_path = output / DONE_FILE
    done = set(done_path.read_text().split()) if done_path.exists() else set()
    todo = [(f"{_safe(prefix)}-{_safe(name)}", dataset, index)
            for prefix, dataset in datasets.items()
            for index, name in enumerate(dataset.names[:limit])]
    todo = [item for item in todo if item[0] not in done]
    run = PseudoLabelRun()
    with done_path.open("a") as log:
        for stem, dataset, index in tqdm(todo, desc="pseudo-labels", unit="image", disable=not progress):
            try:
                sample = dataset[index]
            except SegAnyError as err:
                tqdm.write(f"segany: skipping {stem}: {err}", file=sys.stderr)
                if skipped is not None:
                    skipped.append(str(err))
                continue
            image = sample.image
            records = generator.generate(image)
            if records:  # the image and its masks: both or neither
                write_files_atomic({output / f"{stem}.png": png_bytes(image),
                                    output / f"{stem}.json": sa1b_bytes(f"{stem}.png", image.shape[1], image.shape[0],
                                                                        records)})
                run.images, run.masks = run.images + 1, run.masks + len(records)
                run.label_ious += label_ious([r["segmentation"] for r in records], sample.masks)
            log.write(stem + "\n")
            log.flush()
    return run


def label_ious(rles: List[dict], labels: np.ndarray) -> List[float]:
    """Each COCO RLE's IoU with the best-matching of the (N, H, W) bool labels; [] without labels."""
    if not len(labels):
        return []
    return rle_ious(rles, masks_to_rles(labels)).max(axis=1, initial=0.0).tolist()


def _safe(text: str) -> str:
    """A name usable in a file name: path separators and spaces become '_'."""
    return re.sub(r"[^\w.-]", "_", text)
