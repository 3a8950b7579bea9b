"""Copy-paste augmentation: whole objects of one image pasted, rescaled, into another.

A training set of a few thousand photos holds few small objects. Pasting objects cut out of other
training images at random sizes and places (Ghiasi et al., "Simple Copy-Paste is a Strong Data
Augmentation Method for Instance Segmentation", CVPR 2021) adds exact masks at every scale: the
pasted masks join the image's own, and the parts of those that the pasted objects cover are
removed from them.
"""

from typing import Tuple

import cv2
import numpy as np

from ..masks import mask_to_bbox

# Pasted objects get a long side of this fraction of the image's long side, drawn log-uniformly.
PASTE_SIZES = (0.03, 0.5)
MAX_UPSCALE = 1.5  # a donor object is enlarged at most this much (more would only blur it)
MIN_DONOR_PIXELS = 64
MAX_PASTED = 3  # objects pasted into one image: 1 to this many


def whole_objects(masks: np.ndarray) -> np.ndarray:
    """Indices of the (N, H, W) bool masks worth pasting: at least MIN_DONOR_PIXELS pixels and not
    touching the image border (an object cut by the border would be pasted cut)."""
    border = masks[:, 0].any(1) | masks[:, -1].any(1) | masks[:, :, 0].any(1) | masks[:, :, -1].any(1)
    large = masks.sum(axis=(1, 2)) >= MIN_DONOR_PIXELS
    return np.flatnonzero(large & ~border)


def paste_objects(image: np.ndarray, masks: np.ndarray, donor_image: np.ndarray, donor_masks: np.ndarray,
                  count: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Paste up to `count` whole objects of the donor into the image.

    image (H, W, 3) uint8 and masks (N, H, W) bool; donor likewise (its own size).
    Returns the new image and its (N + P, H, W) masks: the image's own, less what the P pasted
    objects cover (they lie on top, later ones over earlier ones), then the pasted ones. Masks
    left empty stay in the array; the caller drops empty masks as it does for any image.
    """
    height, width = image.shape[:2]
    candidates = whole_objects(donor_masks)
    if count < 1 or len(candidates) == 0:
        return image, masks
    chosen = rng.choice(candidates, min(count, len(candidates)), replace=False)
    image = image.copy()
    pasted = []
    for index in chosen:
        mask = donor_masks[index]
        x0, y0, box_w, box_h = mask_to_bbox(mask)
        wanted = max(height, width) * np.exp(rng.uniform(*np.log(PASTE_SIZES)))
        # Never larger than the image, never enlarged past MAX_UPSCALE.
        scale = min(wanted / max(box_w, box_h), MAX_UPSCALE, height / box_h, width / box_w)
        h, w = max(1, int(round(box_h * scale))), max(1, int(round(box_w * scale)))
        crop = (slice(y0, y0 + box_h), slice(x0, x0 + box_w))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        patch = cv2.resize(donor_image[crop], (w, h), interpolation=interpolation)
        patch_mask = cv2.resize(mask[crop].astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5
        if not patch_mask.any():
            continue
        top, left = int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1))
        placed = np.zeros((height, width), dtype=bool)
        placed[top : top + h, left : left + w] = patch_mask
        image[top : top + h, left : left + w][patch_mask] = patch[patch_mask]
        pasted = [earlier & ~placed for earlier in pasted] + [placed]
        masks = masks & ~placed
    if not pasted:
        return image, masks
    return image, np.concatenate([masks, np.stack(pasted)])
