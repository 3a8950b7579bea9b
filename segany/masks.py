"""Binary mask encodings: COCO run-length encoding (compressed and uncompressed), boxes and areas."""

from typing import Any, Dict, List, Sequence

import numpy as np
from pycocotools import mask as mask_utils

Rle = Dict[str, Any]


def masks_to_rles(masks: np.ndarray) -> List[Rle]:
    """(N, H, W) bool -> N COCO compressed RLEs {"size": [H, W], "counts": str}, JSON-ready."""
    return _encode_columns(np.ascontiguousarray(masks.transpose(0, 2, 1), dtype=bool))


def _encode_columns(columns: np.ndarray) -> List[Rle]:
    """(N, W, H) C-contiguous bool (masks column by column) -> N COCO compressed RLEs."""
    # pycocotools reads column-major (H, W, N): exactly these bytes.
    encoded = mask_utils.encode(columns.view(np.uint8).transpose(2, 1, 0))
    return [{"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in encoded]


def region_to_rle(region: np.ndarray, top: int, left: int, height: int, width: int) -> Rle:
    """COCO compressed RLE of an (height, width) mask that is False outside `region`.

    region: (h, w) bool placed with its top-left pixel at (top, left). A narrow region costs
    in proportion to height x w, not to the whole image.
    """
    h, w = region.shape
    if 4 * w >= width:  # wide: pycocotools' encoder over the whole image is the quicker
        columns = np.zeros((1, width, height), dtype=bool)
        columns[0, left : left + w, top : top + h] = region.T
        return _encode_columns(columns)[0]
    columns = np.zeros((w, height), dtype=bool)  # the region's full-height columns
    columns[:, top : top + h] = region.T
    flat = columns.ravel()  # column-major order of those columns
    if not flat.any():
        counts = [height * width]
    else:
        edges = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
        counts = np.diff(edges).tolist()
        if flat[0]:
            counts.insert(0, 0)
        counts[0] += left * height  # whole columns before the region
        after = (width - left - w) * height
        if len(counts) % 2:  # ends with a run of False
            counts[-1] += after
        elif after:
            counts.append(after)
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def mask_to_rle(mask: np.ndarray) -> Rle:
    """(H, W) bool -> COCO compressed RLE {"size": [H, W], "counts": str}, JSON-ready."""
    return masks_to_rles(mask[None])[0]


def _for_pycocotools(rle: Rle) -> Rle:
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed
        return mask_utils.frPyObjects(rle, *rle["size"])
    return {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def compress_rle(rle: Rle) -> Rle:
    """COCO RLE, compressed or uncompressed -> compressed {"size": [H, W], "counts": str}, JSON-ready."""
    counts = _for_pycocotools(rle)["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(s) for s in rle["size"]], "counts": counts}


def rle_to_mask(rle: Rle) -> np.ndarray:
    """COCO RLE, compressed or uncompressed (counts as a list) -> (H, W) bool."""
    return mask_utils.decode(_for_pycocotools(rle)).astype(bool)


def rle_area(rle: Rle) -> int:
    """Pixels inside a COCO RLE."""
    return int(mask_utils.area(_for_pycocotools(rle)))


def rles_to_boxes(rles: List[Rle]) -> np.ndarray:
    """(N, 4) float [x, y, w, h] boxes of COCO RLEs, from the runs alone; zeros for empty masks."""
    if not rles:
        return np.zeros((0, 4))
    return mask_utils.toBbox([_for_pycocotools(rle) for rle in rles])


def mask_to_uncompressed_rle(mask: np.ndarray) -> Rle:
    """(H, W) bool -> {"size": [H, W], "counts": [run lengths]}, column-major, starting with a 0s run."""
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat.size and flat[0]:
        counts.insert(0, 0)
    return {"size": [int(s) for s in mask.shape], "counts": counts}


def stack_masks(masks: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """(H, W) bool masks -> one (N, H, W) bool array; (0, H, W) when there are none."""
    return np.stack(masks).astype(bool, copy=False) if len(masks) else np.zeros((0, height, width), dtype=bool)


def mask_to_bbox(mask: np.ndarray) -> List[int]:
    """(H, W) bool -> [x, y, w, h] of the tightest box in pixels; zeros for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0, 0, 0, 0]
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
