"""Binary mask encodings: COCO run-length encoding (compressed and uncompressed), boxes and areas."""

from numbers import Integral
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from pycocotools import mask as mask_utils

from .errors import SegAnyError

Rle = Dict[str, Any]
# Image sides up to 2**16 (COCO RLE stores run lengths as 32-bit integers).
MAX_RLE_SIDE = 1 << 16


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


def rle_ious(rles: Sequence[Rle], others: Sequence[Rle]) -> np.ndarray:
    """(len(rles), len(others)) IoU of every pair of COCO RLEs of one image size."""
    if not rles or not others:
        return np.zeros((len(rles), len(others)))
    ious = mask_utils.iou([_for_pycocotools(r) for r in rles], [_for_pycocotools(o) for o in others],
                          [False] * len(others))
    return np.asarray(ious, dtype=float).reshape(len(rles), len(others))


def compress_rle(rle: Rle) -> Rle:
    """COCO RLE, compressed or uncompressed -> compressed {"size": [H, W], "counts": str}, JSON-ready."""
    counts = _for_pycocotools(rle)["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(s) for s in rle["size"]], "counts": counts}


def compressed_runs(counts: str, field: str = "counts") -> List[int]:
    """The run lengths that a compressed COCO RLE string encodes (pycocotools' rleFrString), or a
    SegAnyError naming `field` where the string is not such an encoding."""
    runs: List[int] = []
    position = 0
    while position < len(counts):
        value, shift = 0, 0
        while True:
            if position >= len(counts):
                raise SegAnyError(f"{field}: ends inside a run length")
            code = ord(counts[position]) - 48
            if not 0 <= code < 64:
                raise SegAnyError(f"{field}: character {counts[position]!r} at {position} is not of a COCO RLE")
            value |= (code & 0x1F) << shift
            position, shift = position + 1, shift + 5
            if not code & 0x20:
                if code & 0x10:
                    value |= -1 << shift
                break
            if shift > 35:
                raise SegAnyError(f"{field}: run length at {position} too long")
        runs.append(value + runs[-2] if len(runs) > 2 else value)
    return runs


def check_rle(rle: Any, field: str = "segmentation", size: Optional[Tuple[int, int]] = None) -> Rle:
    """A COCO RLE (compressed or uncompressed) checked to decode to a whole mask: `size` [H, W]
    (equal to `size` if given), run lengths >= 0 summing to H * W. Returns it; SegAnyError names
    `field` and what is wrong otherwise."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise SegAnyError(f"{field}: expected a COCO RLE {{\"size\": [H, W], \"counts\": ...}}")
    shape = rle["size"]
    if (not isinstance(shape, (list, tuple)) or len(shape) != 2
            or not all(isinstance(v, Integral) and not isinstance(v, bool) and 0 <= v <= MAX_RLE_SIDE for v in shape)):
        raise SegAnyError(f"{field}.size: expected [H, W], two integers in [0, {MAX_RLE_SIDE}], got {shape!r}")
    if size is not None and tuple(shape) != tuple(size):
        raise SegAnyError(f"{field}.size: {list(shape)} is not the image's [H, W] {list(size)}")
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if isinstance(counts, str):
        runs = compressed_runs(counts, f"{field}.counts")
    elif isinstance(counts, list) and all(isinstance(v, Integral) and not isinstance(v, bool) for v in counts):
        runs = counts
    else:
        raise SegAnyError(f"{field}.counts: expected a compressed RLE string or a list of run lengths")
    if any(run < 0 for run in runs):
        raise SegAnyError(f"{field}.counts: negative run length")
    if sum(runs) != shape[0] * shape[1]:
        raise SegAnyError(f"{field}.counts: run lengths sum to {sum(runs)}, not H * W = {shape[0] * shape[1]}")
    return rle


def rle_to_mask(rle: Rle) -> np.ndarray:
    """COCO RLE, compressed or uncompressed (counts as a list) -> (H, W) bool. For RLEs from
    files and clients, `check_rle` first: pycocotools decodes garbage without a word."""
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
