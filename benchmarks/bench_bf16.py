"""How much bfloat16 changes the masks: segany's bf16 path against float32 on real photographs.

For every ground-truth object of the evaluation splits (PennFudan, COCO128-seg), the object's
center point (3 masks) and its box (1 mask) are decoded on the same model by a float32
predictor, by a bfloat16 one, and by a float32 decoder on the bfloat16 embedding (to tell the
encoder's share of the difference from the decoder's); the masks at the original image size
are compared with the float32 ones by IoU. `--amg N` also runs the automatic mask generator on the first N images of each split in
float32 and with `dtype=torch.bfloat16` and matches their masks one to one (greedy by IoU).

Masks from random weights are no test of this (their logits sit near 0, where any change flips
pixels): use a trained model. The default is the bundled one.

    python benchmarks/bench_bf16.py [--model default] [--limit 20] [--amg 4] [--data-root ../shared/data]
"""

import argparse
import platform
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

import segany
from segany.amg import SamAutomaticMaskGenerator
from segany.data import shared_dataset
from segany.eval.prompts import center_point, mask_iou, object_masks, tight_box

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("pennfudan", "coco128-seg")


VARIANTS = ("bf16", "bf16 encoder, fp32 decoder")


def prompted_ious(model: torch.nn.Module, dataset, limit: int) -> Dict[Tuple[str, str], List[float]]:
    """IoU with the fp32 mask, per (variant, prompt kind), over every object."""
    exact, fast = segany.SamPredictor(model), segany.SamPredictor(model, dtype=torch.bfloat16)
    mixed = segany.SamPredictor(model)
    ious: Dict[Tuple[str, str], List[float]] = {}
    for index in range(min(limit, len(dataset))):
        sample = dataset[index]
        truths = object_masks(sample)
        exact.set_image(sample.image)
        fast.set_image(sample.image)
        mixed.set_embedding(fast.get_image_embedding().float(), sample.image.shape[:2])
        for truth in truths:
            prompts = {"point (3 masks)": dict(point_coords=np.array([center_point(truth)], dtype=np.float64),
                                               point_labels=np.array([1]), multimask_output=True),
                       "box": dict(box=tight_box(truth), multimask_output=False)}
            for kind, prompt in prompts.items():
                reference = exact.predict(**prompt)[0]
                for variant, predictor in zip(VARIANTS, (fast, mixed)):
                    masks = predictor.predict(**prompt)[0]
                    ious.setdefault((variant, kind), []).extend(mask_iou(a, b) for a, b in zip(reference, masks))
    return ious


def generator_agreement(model: torch.nn.Module, dataset, count: int) -> Dict[str, float]:
    """Masks of the automatic generator in float32 and on its bf16 fast path (encoder in bf16),
    matched greedily by IoU."""
    exact = SamAutomaticMaskGenerator(model)
    fast = SamAutomaticMaskGenerator(model, dtype=torch.bfloat16)
    found = {"fp32 masks": 0, "bf16 masks": 0, "matched IoU >= 0.99": 0, "matched IoU >= 0.9": 0}
    for index in range(min(count, len(dataset))):
        image = dataset[index].image
        a = [r["segmentation"] for r in exact.generate(image)]
        b = [r["segmentation"] for r in fast.generate(image)]
        found["fp32 masks"] += len(a)
        found["bf16 masks"] += len(b)
        table = np.array([[mask_iou(x, y) for y in b] for x in a]).reshape(len(a), len(b))
        while table.size and table.max() > 0:
            i, j = np.unravel_index(int(table.argmax()), table.shape)
            found["matched IoU >= 0.99"] += table[i, j] >= 0.99
            found["matched IoU >= 0.9"] += table[i, j] >= 0.9
            table[i, :], table[:, j] = -1, -1
    return found


def summary(values: List[float]) -> str:
    v = np.asarray(values)
    return (f"| {len(v)} | {v.mean():.4f} | {np.median(v):.4f} | {np.percentile(v, 1):.4f} | {v.min():.4f} "
            f"| {(v >= 0.99).mean():.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="checkpoint or bundled model name")
    parser.add_argument("--limit", type=int, default=20, help="images per evaluation split")
    parser.add_argument("--amg", type=int, default=0, help="images per split for the automatic generator")
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model = segany.load_model(args.model)
    print(f"model {args.model}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.machine()}, python {platform.python_version()}\n")
    print("| variant | split | prompt | masks | mean IoU with fp32 | median | 1st percentile | min | share >= 0.99 |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    start = time.perf_counter()
    pooled: Dict[str, List[float]] = {variant: [] for variant in VARIANTS}
    for name in DATASETS:
        ious = prompted_ious(model, shared_dataset(name, "eval", args.data_root), args.limit)
        for (variant, kind), values in sorted(ious.items()):
            print(f"| {variant} | {name} | {kind} {summary(values)}")
            pooled[variant] += values
    for variant, values in pooled.items():
        print(f"| {variant} | all | all {summary(values)}")
    if args.amg:
        print("\n| split | images | fp32 masks | bf16 masks | matched IoU >= 0.99 | matched IoU >= 0.9 |")
        print("|---|---:|---:|---:|---:|---:|")
        for name in DATASETS:
            found = generator_agreement(model, shared_dataset(name, "eval", args.data_root), args.amg)
            print(f"| {name} | {args.amg} | " + " | ".join(str(int(v)) for v in found.values()) + " |")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
