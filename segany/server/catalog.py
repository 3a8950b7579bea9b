"""The images of a project: the image files under one folder, named by their path relative to it.

Only names found by walking the folder are ever resolved to files, so no request can reach a
file outside it (`..`, absolute paths and links leading out are not in the listing).
"""

import os
import threading
import time
import warnings
from pathlib import Path
from typing import Dict, List, Set, Tuple

from PIL import Image, UnidentifiedImageError

from ..errors import SegAnyError
from ..image_io import IMAGE_SUFFIXES, MAX_IMAGE_PIXELS
from .errors import NotFound

ORIENTATION_TAG = 274  # EXIF orientation; 5-8 swap width and height
LISTING_SECONDS = 5.0  # the folder is walked again after this (new images appear)
BROWSER_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")  # shown as they are; others as PNG


class Catalog:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise SegAnyError(f"--images {root}: not a folder")
        self._sizes: Dict[Tuple[str, float], Tuple[int, int]] = {}
        self._listing: Tuple[float, List[str], Set[str]] = (-LISTING_SECONDS, [], set())
        self._lock = threading.Lock()

    def names(self) -> List[str]:
        """Relative POSIX paths of the image files, sorted; hidden files and folders skipped."""
        return self._current()[0]

    def _current(self) -> Tuple[List[str], Set[str]]:
        with self._lock:
            made, names, known = self._listing
            if time.monotonic() - made < LISTING_SECONDS:
                return names, known
        names = self._walk()
        with self._lock:
            self._listing = (time.monotonic(), names, set(names))
            return names, self._listing[2]

    def _walk(self) -> List[str]:
        found = []
        for folder, subfolders, files in os.walk(self.root):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            for file in files:
                path = Path(folder) / file
                if file.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if path.is_symlink() and not path.resolve().is_relative_to(self.root):  # a link leading out
                    continue
                found.append(path.relative_to(self.root).as_posix())
        return sorted(found)

    def path(self, name: str) -> Path:
        """The file of image `name`; SegAnyError (a 404 to clients) if it is not in the listing."""
        if name not in self._current()[1]:
            raise NotFound(f"no image named {name!r}")
        return self.root / name

    def size(self, name: str) -> Tuple[int, int]:
        """(height, width) as displayed: after the EXIF orientation, as `read_image` reads it."""
        path = self.path(name)
        key = (name, path.stat().st_mtime)
        with self._lock:
            if key in self._sizes:
                return self._sizes[key]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_IMAGE_PIXELS decides
                with Image.open(path) as image:
                    width, height = image.size
                    if image.getexif().get(ORIENTATION_TAG) in (5, 6, 7, 8):
                        width, height = height, width
        except UnidentifiedImageError:
            raise SegAnyError(f"{name}: not a readable image (not an image file or an unsupported format)") from None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise SegAnyError(f"{name}: not a readable image ({str(err).split(',')[0]})") from None
        if width * height > MAX_IMAGE_PIXELS:
            raise SegAnyError(f"{name}: {width}x{height} pixels is more than the {MAX_IMAGE_PIXELS} allowed")
        with self._lock:
            self._sizes[key] = (height, width)
        return height, width
