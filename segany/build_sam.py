"""Drop-in model builders with the official names: `sam_model_registry["vit_b"](checkpoint=...)`."""

from functools import partial
from typing import Callable, Dict, Optional

from .checkpoint import PathLike, load_weights
from .modeling import Sam, build_sam, get_config


def build_named(name: str, checkpoint: Optional[PathLike] = None) -> Sam:
    """The registered architecture `name`, with weights from `checkpoint` if given."""
    model = build_sam(get_config(name))
    return load_weights(model, checkpoint) if checkpoint is not None else model


build_sam_vit_h = partial(build_named, "vit_h")
build_sam_vit_l = partial(build_named, "vit_l")
build_sam_vit_b = partial(build_named, "vit_b")

sam_model_registry: Dict[str, Callable[..., Sam]] = {
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
}
