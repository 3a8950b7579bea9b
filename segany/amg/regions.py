"""Small-region clean-up of binary masks: fill small holes, drop small islands."""

from typing import Tuple

import cv2
import numpy as np


def remove_small_regions(mask: np.ndarray, min_area: float, mode: str) -> Tuple[np.ndarray, bool]:
    """Fill holes (mode "holes") or remove islands (mode "islands") smaller than min_area pixels.

    mask: (H, W) bool. Regions are 8-connected. When every island is small, the largest stays.
    Returns the new mask and whether anything changed.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    regions = ~mask if holes else mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(regions.astype(np.uint8), connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]  # label 0 is the background
    small = sizes < min_area
    if not small.any():
        return mask, False
    selected = np.zeros(count, dtype=bool)  # per label: does it end up inside the mask
    if holes:
        selected[0] = True  # label 0 of the complement is the mask itself
        selected[1:] = small
    elif small.all():
        selected[1 + int(np.argmax(sizes))] = True
    else:
        selected[1:] = ~small
    return selected[labels], True
