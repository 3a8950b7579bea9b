"""Reading images from disk and writing PNGs atomically."""

import io
from pathlib import Path
from typing import BinaryIO, Union

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
    return _decode(path, str(path))


def decode_image(data: bytes, name: str) -> np.ndarray:
    """The bytes of an image file as `read_image` reads the file; `name` is for error messages."""
    return _decode(io.BytesIO(data), name)


def _decode(source: Union[Path, BinaryIO], name: str) -> np.ndarray:
    try:
        with Image.open(source) as image:
            image = ImageOps.exif_transpose(image)
            pixels = pil_to_array(image)
    except UnidentifiedImageError:
        raise ImageError(f"cannot read image {name}: not an image file or an unsupported format") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"cannot read image {name}: {err}") from None
    return to_rgb_uint8(pixels)


def write_png(path: Union[str, Path], pixels: np.ndarray) -> None:
    """Write an (H, W) or (H, W, 3) uint8 array as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")
