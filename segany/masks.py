"""Binary mask encodings: COCO run-length encoding, boxes and areas."""

from typing import Any, Dict, List

import numpy as np
from pycocotools import mask as mask_utils


def mask_to_rle(mask: np.ndarray) -> Dict[str, Any]:
    """(H, W) bool -> COCO compressed RLE {"size": [H, W], "counts": str}, JSON-ready."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: Dict[str, Any]) -> np.ndarray:
    """COCO RLE (compressed, as from `mask_to_rle`) -> (H, W) bool."""
    counts = rle["counts"]
    encoded = {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(encoded).astype(bool)


def mask_to_bbox(mask: np.ndarray) -> List[int]:
    """(H, W) bool -> [x, y, w, h] of the tightest box in pixels; zeros for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0, 0, 0, 0]
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
