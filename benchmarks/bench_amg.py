"""Segment everything: segany's generator against the official one, same image and weights.

Each generator runs in a fresh process (so peak memory is its own): load the model, then
`generate` the image once. Printed per generator:
seconds in the image encoder, the mask decoder network, upscaling masks to the image, the
rest (filters, NMS, encoding: "post-processing"), the total, the peak RSS, the number of
masks; then the ratios official / segany.

Random weights produce masks that fail the default filters, which hides the cost of
everything after the decoder. `--loose` sets pred_iou_thresh=0, stability_score_thresh=0
and box_nms_thresh=0.9 so that every mask goes through every stage: the heaviest load the
post-processing can get from 1024 prompts.

    python benchmarks/bench_amg.py [--arch vit_b] [--image PATH] [--loose] [--bf16] [--device cuda]

On a GPU (`--device cuda`) each generator first segments the image once untimed (kernel
selection, allocator warm-up), stage timers synchronise the device, and the peak is the
device's allocated memory.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "examples" / "truck.jpg"
LOOSE = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 0.9}
STAGES = ("encoder", "decoder", "upscaling")


def timed(seconds: dict, stage: str, fn, sync=lambda: None):
    """fn, accumulating its wall time into seconds[stage] (`sync` waits for the device first and last)."""

    def wrapper(*args, **kwargs):
        sync()
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sync()
            seconds[stage] += time.perf_counter() - start

    return wrapper


def child(impl: str, checkpoint: str, image_path: str, arch: str, params: dict, bf16: bool, device: str) -> dict:
    """Run one generator in this process; return its timings, peak memory and mask count."""
    import numpy as np
    import torch
    from PIL import Image

    image = np.asarray(Image.open(image_path).convert("RGB"))
    if impl == "official":
        from segany.testing import official

        sa = official.import_official()
        model = sa.sam_model_registry[arch](checkpoint=checkpoint).to(device)
        generator = sa.SamAutomaticMaskGenerator(model, **params)
    else:
        import segany

        model = segany.load_model(checkpoint, device=device)
        dtype = torch.bfloat16 if bf16 else torch.float32
        generator = segany.SamAutomaticMaskGenerator(model, dtype=dtype, decoder_dtype=dtype, **params)
    gpu = device.startswith("cuda")
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    if gpu:
        with torch.no_grad():
            generator.generate(image)
        torch.cuda.reset_peak_memory_stats()
    seconds = defaultdict(float)
    predictor = generator.predictor
    predictor.set_image = timed(seconds, "encoder", predictor.set_image, sync)
    model.mask_decoder.forward = timed(seconds, "decoder", model.mask_decoder.forward, sync)
    model.postprocess_masks = timed(seconds, "upscaling", model.postprocess_masks, sync)
    with torch.no_grad():
        start = time.perf_counter()
        records = generator.generate(image)
        sync()
        total = time.perf_counter() - start
    if gpu:
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
    result = {stage: seconds[stage] for stage in STAGES}
    result.update(total=total, post=total - sum(result.values()), rss_mib=peak_mib, masks=len(records))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE if DEFAULT_IMAGE.exists() else REPO / "examples" / "chelsea.png")
    parser.add_argument("--loose", action="store_true", help="filters off: every mask through every stage")
    parser.add_argument("--bf16", action="store_true", help="also run segany with encoder and decoder in bfloat16")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--child", nargs=5, metavar=("IMPL", "CKPT", "IMAGE", "ARCH", "PARAMS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        impl, checkpoint, image, arch, params = args.child
        print(json.dumps(child(impl.removesuffix("-bf16"), checkpoint, image, arch, json.loads(params),
                               impl.endswith("-bf16"), args.device)))
        return

    import segany
    from segany.testing import official

    params = LOOSE if args.loose else {}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = official.write_reference_checkpoint(segany.CONFIGS[args.arch], Path(tmp) / f"{args.arch}.pth")
        impls = ["official", "segany"] + (["segany-bf16"] if args.bf16 else [])
        results = {}
        for impl in impls:
            command = [sys.executable, __file__, "--device", args.device, "--child", impl, str(checkpoint),
                       str(args.image), args.arch, json.dumps(params)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[impl] = json.loads(output.strip().splitlines()[-1])

    import torch
    from PIL import Image

    width, height = Image.open(args.image).size
    where = (torch.cuda.get_device_name() if args.device.startswith("cuda")
             else f"{torch.get_num_threads()} threads, {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"{args.arch}, image {args.image.name} ({width}x{height}), "
          f"{'filters off (--loose)' if args.loose else 'default settings'}, torch {torch.__version__}, {where}\n")
    rows = [("image encoder, s", "encoder"), ("mask decoder network, s", "decoder"),
            ("upscaling masks to the image, s", "upscaling"), ("post-processing, s", "post"),
            ("total, s", "total"),
            ("peak GPU memory, MiB" if args.device.startswith("cuda") else "peak RSS, MiB", "rss_mib")]
    print("| measure | " + " | ".join(impls) + " | " + " | ".join(f"speed-up {i}" for i in impls[1:]) + " |")
    print("|---|" + "---:|" * (2 * len(impls) - 1))
    for label, key in rows:
        values = [results[i][key] for i in impls]
        ratios = [values[0] / v if v > 0 else float("inf") for v in values[1:]]
        print(f"| {label} | " + " | ".join(f"{v:.2f}" if v < 100 else f"{v:.0f}" for v in values)
              + " | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
    print("| masks | " + " | ".join(str(results[i]["masks"]) for i in impls) + " |" + " |" * (len(impls) - 1))


if __name__ == "__main__":
    main()
