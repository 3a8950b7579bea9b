"""Writing files so that a reader never sees a partial one, nor a partial set of them."""

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Union

PathLike = Union[str, Path]
# Names of our temporary files: mkstemp's 8 random characters between ".NAME." and ".tmp".
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp")


@contextlib.contextmanager
def atomic_paths(paths: Sequence[PathLike]) -> Iterator[List[Path]]:
    """Yield a temporary path beside each of `paths`; rename them all onto `paths` only if the
    block succeeds (else none). An OSError names the file it concerns, not its temporary."""
    paths = [Path(p) for p in paths]
    temps: List[Path] = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
            os.close(fd)
            temps.append(Path(tmp))
        yield temps
        mode = 0o666 & ~_umask()  # mkstemp creates 0600 (and some writers recreate the file): the usual mode
        for tmp, path in zip(temps, paths):
            os.chmod(tmp, mode)
            os.replace(tmp, path)
    except OSError as err:
        by_temp = {str(tmp): str(path) for tmp, path in zip(temps, paths)}
        if err.filename is None or str(err.filename) in by_temp:
            named = by_temp.get(str(err.filename), str(paths[0] if len(paths) == 1 else paths[0].parent))
            raise OSError(err.errno, err.strerror or str(err), named) from None
        raise
    finally:
        for tmp in temps:
            if tmp.exists():
                tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    with atomic_paths([path]) as (tmp,):
        yield tmp


def write_files_atomic(contents: Dict[PathLike, bytes]) -> None:
    """Write several files as a set: all of them, or (on any error) none."""
    with atomic_paths(list(contents)) as temps:
        for tmp, (path, data) in zip(temps, contents.items()):
            try:
                tmp.write_bytes(data)
            except OSError as err:
                raise OSError(err.errno, err.strerror or str(err), str(path)) from None


def write_text_atomic(path: PathLike, text: str) -> None:
    write_files_atomic({path: text.encode("utf-8")})


def remove_stale_temp_files(folder: PathLike) -> List[Path]:
    """Delete the temporary files that an interrupted writer left in `folder`; returns them."""
    folder = Path(folder)
    stale = [p for p in folder.iterdir() if TEMP_NAME.match(p.name) and p.is_file()] if folder.is_dir() else []
    for path in stale:
        path.unlink()
    return stale


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
