"""Reading images from disk and writing PNGs atomically."""

from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .fileio import atomic_path
from .transforms import pil_to_array, to_rgb_uint8

# Suffixes taken for images when a folder is listed.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def read_image(path: Union[str, Path]) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, upright per its EXIF orientation.

    Grayscale, alpha, palette and 16-bit files are converted (see `segany.transforms`).
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"image not found: {path}")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            pixels = pil_to_array(image)
    except UnidentifiedImageError:
        raise ImageError(f"cannot read image {path}: not an image file or an unsupported format") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"cannot read image {path}: {err}") from None
    return to_rgb_uint8(pixels)


def write_png(path: Union[str, Path], pixels: np.ndarray) -> None:
    """Write an (H, W) or (H, W, 3) uint8 array as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")
