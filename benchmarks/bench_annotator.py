"""The annotation app: mask decoder latency per click in the page (headless Chromium, ONNX Runtime
Web) and the server's embedding time, segany against the official package with the same weights.

In the page, per decoder graph (segany's export, then the official `SamOnnxModel` export served
in its place): `session.run` per click and click-to-mask-drawn (thresholding and painting
included), median and 95th percentile over `--clicks` clicks of 1 to 4 points a mask, 0.3 s
apart, on the largest image (masks come out at its full size). On the server: the image encoder per image,
through the app (first request) and the official `SamPredictor.set_image`, and a cached request.

    python benchmarks/bench_annotator.py [--arch vit_b] [--clicks 50]

`--arch default` measures the bundled model (no official column for the encoder then).
Needs Debian's chromium and `npm ci --prefix segany/server/web`.
"""

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Optional

import httpx
import numpy as np
import torch

from bench_onnx import export_official
from segany.checkpoint import load_model
from segany.image_io import read_image
from segany.modeling import CONFIGS
from segany.testing import official as reference
from segany.testing.server import CHROMIUM, CHROMIUM_ARGS, start_server

IMAGES = ("truck.jpg", "dog.jpg", "groceries.jpg")
# Between clicks, as an annotator pauses: the page finishes drawing the last mask first (on 2
# cores, back-to-back clicks make the decoder share the CPU with the drawing).
PAUSE_MS = 300
REPO = Path(__file__).resolve().parents[1]


def click_session(page, clicks: int, seed: int = 0) -> dict:
    """Click `clicks` times (masks of 1 to 4 points, each then cleared); the page's latencies in ms."""
    rng = np.random.default_rng(seed)
    page.evaluate("window.segany.decoder.latencies = []; window.segany.updateLatencies = []")
    width, height = page.evaluate("[window.segany.W, window.segany.H]")
    points_in_mask = 0
    for k in range(clicks + 1):  # the first click warms the session up
        x, y = rng.uniform(0.05, 0.95) * width, rng.uniform(0.05, 0.95) * height
        screen = page.evaluate("""([x, y]) => {
            const rect = document.getElementById('view').getBoundingClientRect();
            const z = window.segany.zoom;
            return [rect.left + z.x + x * z.scale, rect.top + z.y + y * z.scale];
        }""", [x, y])
        done = len(page.evaluate("window.segany.updateLatencies"))
        page.mouse.click(*screen, button="left" if points_in_mask == 0 or rng.random() < 0.7 else "right")
        page.wait_for_function(f"window.segany.updateLatencies.length > {done}", timeout=60_000)
        page.wait_for_timeout(PAUSE_MS)
        points_in_mask += 1
        if points_in_mask == 1 + k % 4:
            page.keyboard.press("Escape")
            points_in_mask = 0
    run = page.evaluate("window.segany.decoder.latencies")[1:]
    shown = page.evaluate("window.segany.updateLatencies")[1:]
    return {"run": run, "shown": shown, "threads": page.evaluate("window.segany.decoder.threads")}


def browser_latencies(server, clicks: int, official_graph: Optional[bytes], threads: Optional[int]) -> dict:
    """Latencies in the page with its decoder graph, then with the full-size graph (the official web
    demo's interface: segany's export, then the official one) served in its place."""
    from playwright.sync_api import sync_playwright

    token = server.services.store.add_annotator(f"bench-{time.time_ns()}")
    results = {}
    full_size = (server.services.decoder_dir / "decoder.onnx").read_bytes()
    graphs = [("segany page graph", None), ("segany full-size graph", full_size)]
    graphs += [("official full-size graph", official_graph)] if official_graph else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for name, graph in graphs:
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            if graph is not None:
                page.route("**/api/decoder-page.onnx", lambda route, _request, body=graph: route.fulfill(
                    body=body, headers={"Content-Type": "application/octet-stream",
                                        "Cross-Origin-Resource-Policy": "same-origin"}))
            page.goto(f"{server.url}/?token={token}&image={IMAGES[0]}" + (f"&threads={threads}" if threads else ""))
            page.wait_for_selector("body[data-status=ready]", timeout=600_000)
            results[name] = click_session(page, clicks)
            page.context.close()
        results["chromium"] = browser.version
        browser.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_b", choices=sorted(CONFIGS) + ["default"])
    parser.add_argument("--clicks", type=int, default=50)
    parser.add_argument("--threads", type=int, help="WebAssembly threads in the page (default: ONNX Runtime's)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # the official export's
    data = Path(os.environ.get("SEGANY_SHARED_DATA", REPO.parent / "shared" / "data")) / "examples"
    if not os.path.exists(CHROMIUM):
        sys.exit(f"{CHROMIUM} not found: apt-get install chromium")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = tmp / "images"
        images.mkdir()
        for name in IMAGES:
            (images / name).write_bytes((data / name).read_bytes())
        if args.arch == "default":
            model_source, config = "default", load_model("default").config
            state_dict = None
        else:
            config = CONFIGS[args.arch]
            model_source = str(reference.write_reference_checkpoint(config, tmp / f"{args.arch}.pth"))
            state_dict = torch.load(model_source, weights_only=True)
        official_graph = None
        if state_dict is not None:
            official_graph = export_official(config, state_dict, tmp / "official.onnx", quantize=False).read_bytes()

        server = start_server(images, f"sqlite:///{tmp / 'annotations.db'}", tmp / "cache", model=model_source)
        try:
            token = server.services.store.add_annotator("bench-http")
            headers = {"Authorization": f"Bearer {token}"}
            encode = {}
            with httpx.Client(base_url=server.url, headers=headers, timeout=600) as http:
                for name in IMAGES:
                    began = time.perf_counter()
                    first = http.get(f"/api/embedding/{name}")
                    request_s = time.perf_counter() - began
                    began = time.perf_counter()
                    http.get(f"/api/embedding/{name}")
                    cached_ms = 1000 * (time.perf_counter() - began)
                    encode[name] = (float(first.headers["x-encoder-seconds"]), request_s, cached_ms,
                                    len(first.content))
            official_encode = {}
            if state_dict is not None:
                official = reference.build_reference(config)
                official.load_state_dict(state_dict)
                predictor = reference.import_official().SamPredictor(official.eval())
                for name in IMAGES:
                    image = read_image(images / name)
                    began = time.perf_counter()
                    predictor.set_image(image)
                    official_encode[name] = time.perf_counter() - began
            page = browser_latencies(server, args.clicks, official_graph, args.threads)
        finally:
            server.stop()

    print(f"model {args.arch}, torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Chromium {page['chromium']}, ONNX Runtime Web threads {page['segany page graph']['threads']}\n")
    print(f"In the page: {args.clicks} clicks on {IMAGES[0]} (masks at full size)\n")
    print("| decoder graph | session.run median ms | p95 ms | click to mask drawn median ms | p95 ms |")
    print("|---|---:|---:|---:|---:|")
    for name, timings in page.items():
        if isinstance(timings, dict):
            run, shown = timings["run"], timings["shown"]
            print(f"| {name} | {np.median(run):.1f} | {np.percentile(run, 95):.1f} | {np.median(shown):.1f} | "
                  f"{np.percentile(shown, 95):.1f} |")
    if "official full-size graph" in page:
        shown = {name: np.median(page[name]["shown"]) for name in page if isinstance(page[name], dict)}
        print(f"\nclick to mask drawn, official full-size / segany page graph (medians): "
              f"{shown['official full-size graph'] / shown['segany page graph']:.2f}x; "
              f"official / segany full-size graphs: "
              f"{shown['official full-size graph'] / shown['segany full-size graph']:.2f}x")
    print("\nOn the server: image encoder per image (first request computes it; later ones read the cache)\n")
    print("| image | segany encoder s | request s | official set_image s | speed-up | cached request ms | MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in IMAGES:
        encoder_s, request_s, cached_ms, size = encode[name]
        theirs = official_encode.get(name)
        speed = f"{theirs / encoder_s:.2f}x" if theirs else "-"
        print(f"| {name} | {encoder_s:.2f} | {request_s:.2f} | {f'{theirs:.2f}' if theirs else '-'} | {speed} | "
              f"{cached_ms:.1f} | {size / 2**20:.1f} |")


if __name__ == "__main__":
    main()
