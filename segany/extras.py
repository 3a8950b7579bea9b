"""Optional parts of segany and the pip extras that install them.

`pip install segany` brings what segmenting needs (the predictor, the automatic generator,
`segany segment`, `auto`, `info`, `convert`, `init`); the rest comes with an extra of the same
name as in pyproject.toml. `require` turns a missing extra into one line saying how to install it.
"""

import importlib.util
from typing import Dict, Tuple

from .errors import SegAnyError

_EVAL = ("scipy", "skimage", "matplotlib")

# extra -> the modules its commands import (those of pyproject.toml's extra, by import name)
EXTRAS: Dict[str, Tuple[str, ...]] = {
    "server": ("fastapi", "uvicorn", "sqlalchemy", "onnx"),
    "engine": ("ray", "fsspec", "pyarrow"),
    "train": ("yaml", "tensorboard", "tflite", *_EVAL),  # the trainer validates with segany.eval
    "eval": _EVAL,
    "onnx": ("onnx",),  # and onnxruntime, imported only to quantise
}


class MissingExtraError(SegAnyError, ImportError):
    """A part of segany whose extra is not installed."""


def missing_modules(extra: str) -> Tuple[str, ...]:
    """The modules of `extra` that cannot be imported here."""
    return tuple(name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None)


def require(extra: str, what: str) -> None:
    """MissingExtraError naming the pip command if `what` (e.g. "segany serve") lacks `extra`."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtraError(f"{what} needs the [{extra}] extra ({', '.join(missing)} not installed): "
                                f"pip install 'segany[{extra}]'")
