"""Drop-in model builders with the reference names: `sam_model_registry["vit_b"](checkpoint=...)`
(segment_anything's), `"vit_t"` (mobile_sam's MobileSAM). A SAM-HQ checkpoint given to the builder
of its encoder gets the HQ decoder, as segment_anything_hq's registry of the same names builds.
"""

import dataclasses
from functools import partial
from typing import Callable, Dict, Optional

from .checkpoint import PathLike, check_state_dict, decoder_of, read_checkpoint
from .modeling import Sam, build_sam, get_config


def build_named(name: str, checkpoint: Optional[PathLike] = None) -> Sam:
    """The registered architecture `name`, with weights from `checkpoint` if given."""
    config = get_config(name)
    if checkpoint is None:
        return build_sam(config)
    state_dict, _ = read_checkpoint(checkpoint)
    model = build_sam(dataclasses.replace(config, decoder=decoder_of(state_dict)))
    check_state_dict(model, state_dict, checkpoint)
    model.load_state_dict(state_dict)
    return model


build_sam_vit_h = partial(build_named, "vit_h")
build_sam_vit_l = partial(build_named, "vit_l")
build_sam_vit_b = partial(build_named, "vit_b")
build_sam_vit_t = partial(build_named, "vit_t")

sam_model_registry: Dict[str, Callable[..., Sam]] = {
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
    "vit_t": build_sam_vit_t,
}
