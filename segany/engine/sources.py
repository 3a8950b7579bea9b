"""What the engine reads: images named by a folder, a glob, or a list, on any fsspec filesystem.

Every image gets an id: its path relative to the folder or glob root, or the entry as the list
writes it. Ids name the outputs (`<id without suffix>.json` in the shards), so they are unique.
"""

import posixpath
from dataclasses import dataclass
from typing import List

import fsspec

from ..errors import SegAnyError
from ..image_io import IMAGE_SUFFIXES

GLOB_CHARACTERS = "*?["


@dataclass(frozen=True)
class ImageSource:
    image_id: str  # unique: names the image's outputs
    url: str  # what fsspec opens: a local path or protocol://...


def list_images(spec: str) -> List[ImageSource]:
    """The images of INPUT: a folder (searched recursively), a glob, a .txt list (one path or URL a
    line, relative to the list's folder, # comments) or a .parquet list (column `path` or `url`)."""
    fs, path = fsspec.core.url_to_fs(spec)
    protocol = _protocol(fs)
    if any(c in path for c in GLOB_CHARACTERS):
        root = path[: min(path.index(c) for c in GLOB_CHARACTERS if c in path)].rsplit("/", 1)[0]
        found = [p for p in fs.glob(path) if _is_image(p)]
        sources = [ImageSource(posixpath.relpath(p, root), protocol + p) for p in sorted(found)]
    elif path.endswith((".txt", ".parquet")) and fs.isfile(path):
        entries = _read_list(fs, path)
        folder = posixpath.dirname(path)
        sources = [ImageSource(entry, entry if "://" in entry or entry.startswith("/")
                               else protocol + posixpath.join(folder, entry)) for entry in entries]
    elif fs.isdir(path):
        found = [p for p in fs.find(path) if _is_image(p) and not _hidden(posixpath.relpath(p, path))]
        sources = [ImageSource(posixpath.relpath(p, path), protocol + p) for p in sorted(found)]
    elif fs.isfile(path):
        sources = [ImageSource(posixpath.basename(path), protocol + path)]
    else:
        raise SegAnyError(f"{spec}: no such folder, image, glob match or list")
    if not sources:
        raise SegAnyError(f"{spec}: no images found (suffixes {', '.join(IMAGE_SUFFIXES)})")
    seen = {}
    for source in sources:
        key = json_name(source.image_id)
        if key in seen:
            raise SegAnyError(f"{seen[key]} and {source.image_id} would both be written as {key}")
        seen[key] = source.image_id
    return sources


def json_name(image_id: str) -> str:
    """The name of an image's SA-1B JSON in the output: its id with the suffix replaced."""
    stem, _ = posixpath.splitext(image_id.lstrip("/"))
    return f"{stem.replace('://', '/')}.json"


def _read_list(fs, path: str) -> List[str]:
    if path.endswith(".txt"):
        with fs.open(path, "rt", encoding="utf-8") as file:
            return [line.strip() for line in file if line.strip() and not line.lstrip().startswith("#")]
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as file:
        table = pq.read_table(file)
    for column in ("path", "url"):
        if column in table.column_names:
            return [str(v) for v in table.column(column).to_pylist() if v]
    raise SegAnyError(f"{path}: a Parquet list needs a column named 'path' or 'url' "
                      f"(columns: {', '.join(table.column_names)})")


def _protocol(fs) -> str:
    """'' for the local filesystem, else 'proto://' to put back in front of its paths."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return "" if protocol in ("file", "local") else f"{protocol}://"


def _is_image(path: str) -> bool:
    return posixpath.splitext(path)[1].lower() in IMAGE_SUFFIXES


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))
