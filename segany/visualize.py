"""Pictures a person can look at: masks blended over the image, prompts drawn on top."""

from typing import Optional, Sequence

import colorsys

import numpy as np
from PIL import Image, ImageDraw

# Distinct colours (RGB) for successive masks.
PALETTE = np.array(
    [[30, 144, 255], [255, 99, 71], [50, 205, 50], [255, 215, 0], [186, 85, 211], [0, 206, 209]],
    dtype=np.float32,
)


def overlay_masks(
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    points: Optional[np.ndarray] = None,
    labels: Optional[np.ndarray] = None,
    box: Optional[Sequence[float]] = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """(H, W, 3) uint8 image with each (H, W) bool mask tinted in its own colour and outlined.

    Foreground points are drawn green, background points red, the box in yellow.
    """
    canvas = image.astype(np.float32)
    for i, mask in enumerate(masks):
        colour = mask_colour(i)
        canvas[mask] = (1 - alpha) * canvas[mask] + alpha * colour
        edge = mask & ~_erode(mask)
        canvas[edge] = colour
    picture = Image.fromarray(canvas.round().astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    radius = max(5, round(max(image.shape[:2]) / 100))
    if box is not None:
        draw.rectangle([float(v) for v in box], outline=(255, 255, 0), width=max(2, radius // 2))
    if points is not None:
        for (x, y), label in zip(points, labels):
            fill = (0, 200, 0) if label == 1 else (220, 0, 0)
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill, outline=(255, 255, 255))
    return np.asarray(picture)


def mask_colour(index: int) -> np.ndarray:
    """RGB colour of the index-th mask: the palette, then hues a golden angle apart."""
    if index < len(PALETTE):
        return PALETTE[index]
    hue = (index * 0.618033988749895) % 1.0
    return np.array(colorsys.hsv_to_rgb(hue, 0.75, 0.95), dtype=np.float32) * 255


def _erode(mask: np.ndarray) -> np.ndarray:
    """One-pixel binary erosion (4-neighbourhood); outside the image counts as background."""
    padded = np.pad(mask, 1, constant_values=False)
    return (
        padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    )
