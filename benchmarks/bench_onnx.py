"""The exported decoder in ONNX Runtime: segany's graph against the official package's
(`SamOnnxModel`, exported the same way), same random weights, one click at a time as the
annotation page runs it.

Per graph: milliseconds per click (median and 95th percentile over `--clicks` prompts of 1 to 4
points, on a 1200 x 1800 image size, so `masks` are upscaled to it), and the file size; then the
ratios official / segany. `--quantize` adds the int8 version of each.

    python benchmarks/bench_onnx.py [--arch vit_b] [--clicks 50] [--quantize] [--threads 1]
"""

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import segany
from segany.export import DECODER_INPUTS, DECODER_OUTPUTS, export_decoder
from segany.modeling import CONFIGS
from segany.testing import official as reference


def export_official(config, state_dict, path: Path, quantize: bool) -> Path:
    from segment_anything.utils.onnx import SamOnnxModel

    model = reference.build_reference(config)
    model.load_state_dict(state_dict)
    example = (torch.randn(1, 256, 64, 64), torch.rand(1, 3, 2) * 1024, torch.tensor([[1.0, 0.0, -1.0]]),
               torch.randn(1, 1, 256, 256), torch.tensor([1.0]), torch.tensor([768.0, 1024.0]))
    traced = path.with_suffix(".float.onnx") if quantize else path
    torch.onnx.export(SamOnnxModel(model, return_single_mask=False), example, str(traced),
                      input_names=list(DECODER_INPUTS), output_names=list(DECODER_OUTPUTS),
                      dynamic_axes={"point_coords": {1: "n"}, "point_labels": {1: "n"}}, opset_version=17,
                      dynamo=False)
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(traced), str(path), weight_type=QuantType.QUInt8)
    return path


def clicks(count: int, seed: int = 0):
    """Feeds of `count` prompts: 1 to 4 points (then the padding point), half with a mask input."""
    rng = np.random.default_rng(seed)
    for k in range(count):
        n = 1 + k % 4
        coords = np.concatenate([rng.uniform(0, 1024, (1, n, 2)), np.zeros((1, 1, 2))], axis=1)
        labels = np.concatenate([rng.integers(0, 2, (1, n)), -np.ones((1, 1))], axis=1)
        yield {"image_embeddings": rng.normal(size=(1, 256, 64, 64)).astype(np.float32),
               "point_coords": coords.astype(np.float32), "point_labels": labels.astype(np.float32),
               "mask_input": rng.normal(size=(1, 1, 256, 256)).astype(np.float32),
               "has_mask_input": np.array([float(k % 2)], np.float32),
               "orig_im_size": np.array([1200.0, 1800.0], np.float32)}


def time_graph(path: Path, count: int, threads: int) -> tuple:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options)
    feeds = list(clicks(count))
    session.run(None, feeds[0])  # warm-up
    times = []
    for feed in feeds:
        start = time.perf_counter()
        session.run(None, feed)
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times)), float(np.percentile(times, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_b", choices=sorted(CONFIGS))
    parser.add_argument("--clicks", type=int, default=50)
    parser.add_argument("--quantize", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1, as in a page)")
    args = parser.parse_args()
    config = CONFIGS[args.arch]
    state_dict = reference.random_reference_state_dict(config)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "model.pth"
        torch.save(state_dict, checkpoint)
        model = segany.load_model(checkpoint)
        for quantize in (False, True) if args.quantize else (False,):
            kind = "int8" if quantize else "fp32"
            ours = export_decoder(model, Path(folder) / f"segany-{kind}.onnx", quantize=quantize)
            theirs = export_official(config, state_dict, Path(folder) / f"official-{kind}.onnx", quantize)
            for name, path in (("official", theirs), ("segany", ours)):
                median, p95 = time_graph(path, args.clicks, args.threads)
                rows.append((f"{name} {kind}", median, p95, path.stat().st_size / 2**20))
    print(f"{platform.processor() or platform.machine()}, onnxruntime {onnxruntime.__version__}, {args.arch}, "
          f"{args.clicks} clicks, {args.threads} thread(s)")
    print("| decoder | median ms/click | p95 ms/click | MiB |\n|---|---|---|---|")
    for name, median, p95, size in rows:
        print(f"| {name} | {median:.1f} | {p95:.1f} | {size:.1f} |")
    for official, ours in zip(rows[0::2], rows[1::2]):
        print(f"{official[0]} / {ours[0]}: median {official[1] / ours[1]:.2f}x")


if __name__ == "__main__":
    main()
