"""The annotation app (data engine stages 1 and 2): `segany serve`.

A FastAPI server over a folder of images and a SQL database; a browser page that runs the
mask decoder itself (ONNX Runtime Web) on embeddings the server computes once per image.
"""

from ..extras import require

require("server", "segany.server")

import os
from pathlib import Path
from typing import Optional

import torch

from ..amg import SamAutomaticMaskGenerator
from ..checkpoint import load_model
from ..errors import SegAnyError
from ..export.onnx import export_decoder
from .app import DECODER_GRAPHS, Services, create_app
from .catalog import Catalog
from .embeddings import EmbeddingService
from .store import Store, default_db_url

WEB_DIR = Path(__file__).parent / "web"  # package.json of the page's npm packages
VENDOR_ORT = Path(__file__).parent / "vendor" / "ort"  # in wheels (setup.py)
ORT_FILE = "ort.wasm.min.mjs"


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "segany" / "server"


def find_ort_web() -> Path:
    """onnxruntime-web's files for the page: $SEGANY_ORT_WEB, those a wheel carries (`VENDOR_ORT`),
    or, in a checkout, the dist folder `npm ci --prefix segany/server/web` installs."""
    folders = [Path(os.environ["SEGANY_ORT_WEB"])] if os.environ.get("SEGANY_ORT_WEB") else \
        [VENDOR_ORT, WEB_DIR / "node_modules" / "onnxruntime-web" / "dist"]
    for folder in folders:
        if (folder / ORT_FILE).is_file():
            return folder
    raise SegAnyError(f"onnxruntime-web not found in {folders[-1]}: run `npm ci --prefix {WEB_DIR}` "
                      "(or set SEGANY_ORT_WEB to its dist folder)")


def build_services(images: Path, db: Optional[str] = None, model: str = "default", cache_dir: Optional[Path] = None,
                   dtype: torch.dtype = torch.float32, prefill_points_per_side: int = 32,
                   prefill_iou_thresh: float = 0.88, prefill_stability_thresh: float = 0.95,
                   max_body_bytes: Optional[int] = None) -> Services:
    """Everything the app needs; the ONNX decoders are exported once per model into the cache.

    max_body_bytes: larger request bodies are refused; default `default_body_limit` of the images.
    """
    ort_dir = find_ort_web()
    catalog = Catalog(images)
    if max_body_bytes is None:
        max_body_bytes = default_body_limit(catalog)
    store = Store(db or default_db_url())
    sam = load_model(model)
    embeddings = EmbeddingService(sam, cache_dir or default_cache_dir(), dtype=dtype)
    for name, full_size in DECODER_GRAPHS.items():
        if not (embeddings.cache_dir / f"{name}.onnx").exists():
            export_decoder(sam, embeddings.cache_dir / f"{name}.onnx", full_size=full_size)
    prefill = SamAutomaticMaskGenerator(sam, points_per_side=prefill_points_per_side,
                                        pred_iou_thresh=prefill_iou_thresh,
                                        stability_score_thresh=prefill_stability_thresh,
                                        output_mode="coco_rle", dtype=dtype)
    return Services(catalog, store, embeddings, embeddings.cache_dir, prefill, ort_dir, model_name=str(model),
                    max_body_bytes=max_body_bytes)


def default_body_limit(catalog: Catalog) -> int:
    """Request body limit: 1 MiB, or 2 bits per pixel of the largest image if that is more. A
    mask's RLE takes a few bytes per run and a drawn mask has a few runs per column, so a save is
    far below this; the limit stops a client filling the disk with one request."""
    pixels = 0
    for name in catalog.names():
        try:
            height, width = catalog.size(name)
        except SegAnyError:  # unreadable images are refused when requested
            continue
        pixels = max(pixels, height * width)
    return max(1 << 20, pixels // 4)


__all__ = ["Services", "build_services", "create_app", "find_ort_web", "Store"]
