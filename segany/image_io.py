"""Reading images from disk and writing PNGs atomically."""

import io
import struct
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .fileio import write_files_atomic
from .transforms import pil_to_array, to_rgb_uint8

# Suffixes taken for images when a folder is listed.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
# Larger images are refused before decoding (a few hundred bytes can declare gigapixels):
# 2**27 pixels, e.g. 16384 x 8192, 384 MiB as RGB.
MAX_IMAGE_PIXELS = 1 << 27
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_IMAGE_PIXELS decides
            with Image.open(source) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise ImageError(f"cannot read image {name}: {image.width}x{image.height} pixels is more than "
                                     f"the {MAX_IMAGE_PIXELS} allowed")
                if image.format == "PNG":
                    _check_png_complete(image.fp, image.width, image.height, name)
                image = ImageOps.exif_transpose(image)
                pixels = pil_to_array(image)
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(f"cannot read image {name}: {str(err).split(',')[0]}") from None
    except UnidentifiedImageError:
        raise ImageError(f"cannot read image {name}: not an image file or an unsupported format") from None
    except (OSError, ValueError, SyntaxError, struct.error, zlib.error) as err:
        raise ImageError(f"cannot read image {name}: {err}") from None
    return to_rgb_uint8(pixels)


def _png_rows_bytes(width: int, height: int, bits_per_pixel: int, interlaced: bool) -> int:
    """Bytes of a PNG's decompressed image data: each row of each (Adam7) pass is led by a filter byte."""
    if not interlaced:
        return height * (1 + (width * bits_per_pixel + 7) // 8)
    total = 0
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)):
        w, h = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
        total += h * (1 + (w * bits_per_pixel + 7) // 8) if w else 0
    return total


def _check_png_complete(fp: BinaryIO, width: int, height: int, name: str) -> None:
    """Raise ImageError if a PNG's image data ends before its last row (Pillow fills the rest black)."""
    position = fp.tell()
    fp.seek(0)
    data = fp.read()
    fp.seek(position)
    bit_depth, colour_type, interlace = data[24], data[25], data[28]
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour_type, 1)
    expected = _png_rows_bytes(width, height, bit_depth * channels, interlace == 1)
    inflate, found, offset = zlib.decompressobj(), 0, len(PNG_SIGNATURE)
    while offset + 8 <= len(data) and found < expected:
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"IDAT":
            chunk = data[offset + 8:offset + 8 + length]
            while chunk and found < expected:  # bounded output per call: never inflates a bomb whole
                found += len(inflate.decompress(chunk, 1 << 20))
                chunk = inflate.unconsumed_tail
        offset += 12 + length
    if found < expected:
        raise ImageError(f"cannot read image {name}: truncated PNG ({found} of {expected} bytes of image data)")


def png_bytes(pixels: np.ndarray) -> bytes:
    """An (H, W) or (H, W, 3) uint8 array encoded as a PNG file."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: Union[str, Path], pixels: np.ndarray) -> None:
    """Write an (H, W) or (H, W, 3) uint8 array as PNG, atomically."""
    write_files_atomic({path: png_bytes(pixels)})
