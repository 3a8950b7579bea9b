"""Time segany against the official segment-anything package on this machine, same weights.

Measures, for one image: the image encoder (`set_image`: resize, normalise, ViT), one
interactive prompt (`predict`: prompt encoder, decoder, upscaling to the original size), and
prompts batched 64 at a time on one image (`predict_torch`, per prompt, low-res and upscaled).
Prints a table with the ratio official / segany (> 1: segany is faster).

    python benchmarks/bench_model.py [--arch vit_b] [--repeats 3] [--image PATH]
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import segany
from segany.testing import official as reference

REPO = Path(__file__).resolve().parents[1]


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--repeats", type=int, default=3, help="timed encoder runs (decoder: 10x this)")
    default_image = REPO.parent / "shared" / "data" / "examples" / "truck.jpg"
    parser.add_argument("--image", type=Path, default=default_image if default_image.exists() else REPO / "examples" / "chelsea.png")
    args = parser.parse_args()

    sa = reference.import_official()
    config = segany.CONFIGS[args.arch]
    image = np.asarray(Image.open(args.image).convert("RGB"))
    h, w = image.shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = reference.write_official_checkpoint(config, Path(tmp) / f"{args.arch}.pth")
        ours = segany.SamPredictor(segany.load_model(checkpoint))
        theirs = sa.SamPredictor(sa.sam_model_registry[args.arch](checkpoint=str(checkpoint)))

    rng = np.random.default_rng(0)
    point = np.array([[0.5 * w, 0.5 * h]])
    label = np.array([1])
    batch = 64
    batch_points = torch.as_tensor(rng.uniform(0, 1, (batch, 1, 2)) * [w, h], dtype=torch.float)
    batch_labels = torch.ones(batch, 1, dtype=torch.int)

    def encode(p):
        p.set_image(image)

    def one_prompt(p):
        p.predict(point, label)

    def batched_low_res(p):
        coords = p.transform.apply_coords_torch(batch_points, p.original_size)
        sparse, dense = p.model.prompt_encoder((coords, batch_labels), None, None)
        p.model.mask_decoder(p.features, p.model.prompt_encoder.get_dense_pe(), sparse, dense, True)

    def batched_upscaled(p):
        p.predict_torch(p.transform.apply_coords_torch(batch_points, p.original_size), batch_labels)

    measures = [
        ("image encoder (set_image)", encode, 1, args.repeats),
        ("1 prompt, upscaled to image (predict)", one_prompt, 1, 10 * args.repeats),
        (f"{batch} prompts, low-res logits, per prompt", batched_low_res, batch, 2 * args.repeats),
        (f"{batch} prompts, upscaled (predict_torch), per prompt", batched_upscaled, batch, 2 * args.repeats),
    ]
    rows = []
    with torch.no_grad():
        encode(ours), encode(theirs)
        for name, fn, prompts, repeats in measures:
            official_s = median_seconds(lambda: fn(theirs), repeats) / prompts
            ours_s = median_seconds(lambda: fn(ours), repeats) / prompts
            rows.append((name, official_s * 1000, ours_s * 1000, official_s / ours_s))

    print(f"# {args.arch}, image {args.image.name} ({w}x{h}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"| {'measure':<48} | {'official ms':>12} | {'segany ms':>10} | {'speed-up':>8} |")
    print(f"|{'-' * 50}|{'-' * 13}:|{'-' * 11}:|{'-' * 9}:|")
    for name, official_ms, ours_ms, ratio in rows:
        print(f"| {name:<48} | {official_ms:>12.1f} | {ours_ms:>10.1f} | {ratio:>7.2f}x |")


if __name__ == "__main__":
    main()
