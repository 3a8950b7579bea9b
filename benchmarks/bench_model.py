"""Time segany against each family's reference package on this machine, same weights.

Measures, for one image: the image encoder (`set_image`: resize, normalise, ViT), one
interactive prompt (`predict`: prompt encoder, decoder, upscaling to the original size), and
prompts batched 64 at a time on one image (low-res logits only, and `predict_torch` upscaled),
per prompt. Columns: the official package, segany in float32 (same results), segany with the
image encoder in bfloat16 (`dtype`; the decoder stays float32), and with the decoder in
bfloat16 too (`decoder_dtype`). Ratios are official / segany (> 1: segany is faster). `--memory`
adds the peak RSS of a fresh process that loads the model and encodes the image once.
`--arch default` times the bundled model (docs/models.md) against the official vit_b, the
smallest official SAM (so the parity line is left out). `--family mobile_sam|sam_hq|sam2` times
MobileSAM (vit_t) against `mobile_sam`, SAM-HQ (hq_vit_b, or `--arch hq_vit_t` etc.) against
`segment_anything_hq`, SAM 2.1 (hiera_t, or `--arch hiera_s` etc.) against `sam2`'s
`SAM2ImagePredictor`; their "official" column is that reference. segany's columns are
`SamPredictor` for every family.

Both packages run in this one process, so the official one also runs with the allocator
settings that creating a segany predictor applies (`segany.allocator`): the ratios are
not flattered by them.

    python benchmarks/bench_model.py [--family sam|mobile_sam|sam_hq|sam2] [--arch NAME] [--repeats 3] [--image PATH]
                                     [--memory]
"""

import argparse
import os
import platform
import statistics
import subprocess
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
DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "examples" / "truck.jpg"
BATCH = 64

# Child process for --memory: load a checkpoint with one implementation, encode one image.
RSS_CHILD = """
import sys, numpy as np
from PIL import Image
impl, checkpoint, image, arch = sys.argv[1:5]
image = np.asarray(Image.open(image).convert("RGB"))
if impl == "official":
    import segany
    from segany.testing import official
    predictor = official.reference_predictor(segany.CONFIGS[arch], checkpoint)
else:
    import segany
    predictor = segany.SamPredictor(segany.load_model(checkpoint))
predictor.set_image(image)
# VmHWM, not ru_maxrss: the latter carries the parent's peak across fork + exec.
peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(peak_kib / 1024)
"""
# Each family's architecture timed by default, and those it may time.
FAMILY_ARCHS = {"sam": ["vit_b", "vit_l", "vit_h", "default"], "mobile_sam": ["vit_t"],
                "sam_hq": ["hq_vit_b", "hq_vit_l", "hq_vit_h", "hq_vit_t"],
                "sam2": ["hiera_t", "hiera_s", "hiera_b+", "hiera_l"]}


def is_sam2_reference(p) -> bool:
    return hasattr(p, "_transforms")  # sam2's SAM2ImagePredictor


def input_frame(p, points: torch.Tensor) -> torch.Tensor:
    """Points (B, N, 2) in image pixels -> the predictor's model input frame."""
    if is_sam2_reference(p):
        return p._transforms.transform_coords(points, normalize=True, orig_hw=p._orig_hw[-1])
    return p.transform.apply_coords_torch(points, p.original_size)


def embedding(p) -> torch.Tensor:
    return p._features["image_embed"] if is_sam2_reference(p) else p.features


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mib(impl: str, checkpoint: Path, image: Path, arch: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, impl, str(checkpoint), str(image), arch],
        check=True, capture_output=True, text=True,
    )
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="sam", choices=list(FAMILY_ARCHS))
    parser.add_argument("--arch", choices=[arch for archs in FAMILY_ARCHS.values() for arch in archs],
                        help="an architecture of the family (default: its first)")
    parser.add_argument("--repeats", type=int, default=3, help="timed encoder runs (decoder: more)")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE if DEFAULT_IMAGE.exists() else REPO / "examples" / "chelsea.png")
    parser.add_argument("--memory", action="store_true", help="also measure peak RSS of encoding one image")
    args = parser.parse_args()
    args.arch = args.arch or FAMILY_ARCHS[args.family][0]
    if args.arch not in FAMILY_ARCHS[args.family]:
        parser.error(f"--arch {args.arch} is not of the {args.family} family: {FAMILY_ARCHS[args.family]}")

    image = np.asarray(Image.open(args.image).convert("RGB"))
    h, w = image.shape[:2]
    tmp = tempfile.TemporaryDirectory()
    official_arch = "vit_b" if args.arch == "default" else args.arch
    official_config = segany.CONFIGS[official_arch]
    package = reference.import_reference(reference.REFERENCES[official_config.family])
    official_checkpoint = reference.write_reference_checkpoint(official_config, Path(tmp.name) / f"{official_arch}.pth")
    checkpoint = segany.checkpoint.BUNDLED_MODELS["default"] if args.arch == "default" else official_checkpoint
    model = segany.load_model(checkpoint)
    variants = {
        "official": reference.reference_predictor(official_config, official_checkpoint),
        "segany fp32": segany.SamPredictor(model),
        "segany bf16": segany.SamPredictor(model, dtype=torch.bfloat16),
        "segany bf16+dec": segany.SamPredictor(model, dtype=torch.bfloat16, decoder_dtype=torch.bfloat16),
    }

    rng = np.random.default_rng(0)
    point, label = np.array([[0.5 * w, 0.5 * h]]), np.array([1])
    batch_points = torch.as_tensor(rng.uniform(0, 1, (BATCH, 1, 2)) * [w, h], dtype=torch.float)
    batch_labels = torch.ones(BATCH, 1, dtype=torch.int)

    def encode(p):
        p.set_image(image)

    def one_prompt(p):
        p.predict(point, label)

    def batched_low_res(p):
        # The decoder as each predictor runs it (segany: with its precision, 4 prompts a call).
        coords = input_frame(p, batch_points)
        if isinstance(p, segany.SamPredictor):
            p.predict_low_res_torch(coords, batch_labels)
        elif is_sam2_reference(p):
            sparse, dense = p.model.sam_prompt_encoder(points=(coords, batch_labels), boxes=None, masks=None)
            p.model.sam_mask_decoder(p._features["image_embed"], p.model.sam_prompt_encoder.get_dense_pe(), sparse,
                                     dense, True, True, p._features["high_res_feats"])
        else:
            sparse, dense = p.model.prompt_encoder((coords, batch_labels), None, None)
            hq = (False, p.interm_features) if hasattr(p, "interm_features") else ()  # SAM-HQ's extra inputs
            p.model.mask_decoder(p.features, p.model.prompt_encoder.get_dense_pe(), sparse, dense, True, *hq)

    def batched_upscaled(p):
        predict = p._predict if is_sam2_reference(p) else p.predict_torch
        predict(input_frame(p, batch_points), batch_labels)

    measures = [
        ("image encoder (set_image), s", encode, 1, args.repeats, 1.0),
        ("1 prompt, upscaled to image (predict), ms", one_prompt, 1, 10 * args.repeats, 1000.0),
        (f"{BATCH} prompts, low-res logits, ms per prompt", batched_low_res, BATCH, 2 * args.repeats, 1000.0),
        (f"{BATCH} prompts, upscaled (predict_torch), ms per prompt", batched_upscaled, BATCH, 2 * args.repeats, 1000.0),
    ]
    results = {}
    with torch.no_grad():
        for predictor in variants.values():
            encode(predictor)
        for label_, fn, prompts, repeats, unit in measures:
            for name, predictor in variants.items():
                results[label_, name] = median_seconds(lambda: fn(predictor), repeats) / prompts * unit
        ours, theirs = variants["segany fp32"], variants["official"]
        error = (variants["segany bf16"].features - ours.features).norm() / ours.features.norm()
        parity = (ours.features - embedding(theirs)).abs().max() if args.arch != "default" else None

    names = list(variants)
    against = " (official: vit_b)" if args.arch == "default" else f" (official: {package.__name__})"
    print(f"{args.arch}{against}, image {args.image.name} ({w}x{h}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {sys.version.split()[0]}\n")
    header = "| measure | " + " | ".join(names) + " | " + " | ".join(f"speed-up {n[7:]}" for n in names[1:]) + " |"
    print(header)
    print("|---|" + "---:|" * (2 * len(names) - 1))
    for label_, *_ in measures:
        values = [results[label_, n] for n in names]
        ratios = [values[0] / v for v in values[1:]]
        print(f"| {label_} | " + " | ".join(f"{v:.2f}" if v < 10 else f"{v:.1f}" for v in values)
              + " | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
    parity_text = "" if parity is None else f"fp32 embedding vs official: max abs difference {parity:.2e}; "
    print(f"\n{parity_text}bf16 embedding vs fp32: relative L2 error {error:.2%}")
    if args.memory:
        official_rss = peak_rss_mib("official", official_checkpoint, args.image, official_arch)
        ours_rss = peak_rss_mib("segany", checkpoint, args.image, args.arch)
        print(f"peak RSS, load + encode one image: official {official_rss:.0f} MiB, segany {ours_rss:.0f} MiB")
    tmp.cleanup()


if __name__ == "__main__":
    main()
