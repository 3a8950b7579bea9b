"""Weight averaging of models fine-tuned from one start (a "model soup": Wortsman et al., ICML 2022).

Runs that continue one model with different seeds or augmentations end in nearby weights; their
uniform average often scores above each of them, at the cost of one model at inference.
"""

from pathlib import Path
from typing import Dict, Sequence, Union

import torch

from ..checkpoint import load_model
from ..errors import SegAnyError
from ..modeling import Sam, config_name

PathLike = Union[str, Path]


def average_checkpoints(sources: Sequence[PathLike]) -> Sam:
    """A model whose every floating-point tensor is the mean of those of `sources`.

    The checkpoints must share one architecture (the same config). Tensors are summed in float64
    one checkpoint at a time, so memory holds the first model, the sums and one more model,
    whatever their number. Integer tensors (batch norm's step counters) are the first
    checkpoint's.
    """
    if len(sources) < 2:
        raise SegAnyError(f"averaging needs at least two checkpoints, got {len(sources)}")
    first = load_model(sources[0])
    totals: Dict[str, torch.Tensor] = {key: tensor.double() if tensor.is_floating_point() else tensor
                                       for key, tensor in first.state_dict().items()}
    for source in sources[1:]:
        model = load_model(source)
        if model.config != first.config:
            raise SegAnyError(f"{source}: architecture {config_name(model.config)} differs from "
                              f"{sources[0]}'s {config_name(first.config)} (image size, widths or depths); "
                              "only checkpoints of one architecture can be averaged")
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                totals[key] += tensor.double()
        del model
    first.load_state_dict({key: (total / len(sources)).float() if total.is_floating_point() else total
                           for key, total in totals.items()})
    return first
