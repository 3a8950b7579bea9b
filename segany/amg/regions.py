"""Small-region clean-up of masks: fill small holes, drop small islands (binary masks, or SAM 2's logits)."""

from typing import Tuple

import cv2
import numpy as np
import torch


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


def fill_small_regions(logits: torch.Tensor, threshold: float, max_hole_area: float,
                       max_sprinkle_area: float) -> torch.Tensor:
    """SAM 2's clean-up of mask logits (..., h, w), each (h, w) plane on its own: 8-connected
    background regions (logits <= threshold) of at most max_hole_area pixels become foreground
    (threshold + 10), foreground regions of at most max_sprinkle_area pixels become background
    (threshold - 10); both judged on the logits as given; 0 turns either off. Returns a new tensor.
    """
    if max_hole_area <= 0 and max_sprinkle_area <= 0:
        return logits
    planes = logits.detach().float().cpu().reshape(-1, *logits.shape[-2:]).numpy()
    cleaned = planes.copy()
    for plane, out in zip(planes, cleaned):
        foreground = plane > threshold
        for region, max_area, value in ((~foreground, max_hole_area, threshold + 10.0),
                                        (foreground, max_sprinkle_area, threshold - 10.0)):
            if max_area <= 0:
                continue
            _, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
            small = stats[:, cv2.CC_STAT_AREA] <= max_area
            small[0] = False  # label 0: the pixels outside the region
            out[small[labels]] = value
    return torch.from_numpy(cleaned).reshape(logits.shape).to(logits.device, logits.dtype)
