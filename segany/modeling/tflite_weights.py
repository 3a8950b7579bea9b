"""Google's quantised MobileNetV2 `.tflite` files -> the weights of our `MobileNetV2`.

The flatbuffer is parsed with the `tflite` package (no TensorFlow). Each convolution's weight
and bias are dequantised (`scale * (q - zero_point)`, per tensor or per output channel) and
assigned to our modules in graph order; batch norm is already folded into them. Layouts:
CONV_2D weights are (out, kh, kw, in), DEPTHWISE_CONV_2D weights (1, kh, kw, channels).
"""

from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import CheckpointError
from .mobilenet import IMAGENET_CLASSES, ConvSame, MobileNetV2

PathLike = Union[str, Path]
CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def _tflite():
    try:
        import tflite
    except ImportError:
        raise CheckpointError("reading .tflite files needs the tflite package: pip install tflite") from None
    return tflite


def _dequantised(model, graph, index: int, name: str) -> np.ndarray:
    """Tensor `index` of `graph` as float32, dequantised if it is stored quantised."""
    tflite = _tflite()
    tensor = graph.Tensors(index)
    dtypes = {tflite.TensorType.UINT8: np.uint8, tflite.TensorType.INT8: np.int8,
              tflite.TensorType.INT32: np.int32, tflite.TensorType.FLOAT32: np.float32}
    if tensor.Type() not in dtypes:
        raise CheckpointError(f"{name}: tensor {tensor.Name().decode()} has unsupported type {tensor.Type()}")
    raw = model.Buffers(tensor.Buffer()).DataAsNumpy()
    shape = tuple(int(n) for n in tensor.ShapeAsNumpy())
    if isinstance(raw, int) or raw.size != np.prod(shape) * np.dtype(dtypes[tensor.Type()]).itemsize:
        raise CheckpointError(f"{name}: tensor {tensor.Name().decode()} has no data of shape {shape}")
    values = raw.view(dtypes[tensor.Type()]).reshape(shape).astype(np.float32)
    quantisation = tensor.Quantization()
    if tensor.Type() == tflite.TensorType.FLOAT32 or quantisation is None or quantisation.ScaleLength() == 0:
        return values
    scale = quantisation.ScaleAsNumpy().astype(np.float32)
    zero_point = quantisation.ZeroPointAsNumpy().astype(np.float32)
    if scale.size > 1:  # per channel, along the quantised dimension
        axis_shape = [1] * values.ndim
        axis_shape[quantisation.QuantizedDimension()] = scale.size
        scale, zero_point = scale.reshape(axis_shape), zero_point.reshape(axis_shape)
    return scale * (values - zero_point)


def read_tflite_convolutions(path: PathLike) -> List[Tuple[str, str, np.ndarray, np.ndarray]]:
    """Every convolution of the file's graph, in execution order: (op, tensor name, weight, bias).

    Weights come in PyTorch's layouts: (out, in, kh, kw), or (channels, 1, kh, kw) for depthwise.
    """
    tflite = _tflite()
    path = Path(path)
    try:
        buffer = path.read_bytes()
        model = tflite.Model.GetRootAsModel(buffer, 0)
        graph = model.Subgraphs(0)
        op_names = {code: name for name, code in vars(tflite.BuiltinOperator).items() if not name.startswith("_")}
        convolutions = []
        for i in range(graph.OperatorsLength()):
            operator = graph.Operators(i)
            code = model.OperatorCodes(operator.OpcodeIndex())
            op = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
            if op not in CONV_OPS:
                continue
            inputs = operator.InputsAsNumpy()
            weight = _dequantised(model, graph, int(inputs[1]), str(path))
            bias = _dequantised(model, graph, int(inputs[2]), str(path))
            layout = (0, 3, 1, 2) if op == "CONV_2D" else (3, 0, 1, 2)
            name = graph.Tensors(int(inputs[1])).Name().decode()
            convolutions.append((op, name, np.ascontiguousarray(weight.transpose(layout)), bias))
    except CheckpointError:
        raise
    except Exception as err:  # the flatbuffer reader fails in many ways on bytes that are not a model
        raise CheckpointError(f"{path}: not a readable .tflite model ({type(err).__name__}: {err})") from None
    if not convolutions:
        raise CheckpointError(f"{path}: no convolutions in this .tflite model")
    return convolutions


def _conv_modules(network: MobileNetV2) -> List[Tuple[str, ConvSame]]:
    """Our convolutions in the order the TensorFlow graph runs them."""
    modules = [("stem", network.stem)]
    for index, block in enumerate(network.blocks):
        for part in ("expand", "depthwise", "project"):
            conv = getattr(block, part)
            if conv is not None:
                modules.append((f"blocks.{index}.{part}", conv))
    if network.classifier is not None:
        modules += [("head", network.head), ("classifier", network.classifier)]
    return modules


def mobilenet_v2_state_dict(path: PathLike, network: MobileNetV2) -> Dict[str, torch.Tensor]:
    """The state dict of `network` (any output stride, with or without its classifier) from a
    MobileNetV2 1.0 `.tflite` file."""
    convolutions = read_tflite_convolutions(path)
    modules = _conv_modules(network)
    if network.classifier is None and len(convolutions) == len(modules) + 2:
        convolutions = convolutions[:-2]  # the head and classifier, not wanted
    if len(convolutions) != len(modules):
        raise CheckpointError(
            f"{path}: {len(convolutions)} convolutions, but MobileNetV2 1.0 has {len(modules)}: not that network"
        )
    state: Dict[str, torch.Tensor] = {}
    for (name, conv), (op, tensor_name, weight, bias) in zip(modules, convolutions):
        depthwise = conv.groups > 1
        if depthwise != (op == "DEPTHWISE_CONV_2D") or tuple(weight.shape) != tuple(conv.weight.shape):
            raise CheckpointError(
                f"{path}: {tensor_name} is {op} {tuple(weight.shape)}, but {name} expects {tuple(conv.weight.shape)}"
            )
        state[f"{name}.weight"] = torch.from_numpy(weight)
        state[f"{name}.bias"] = torch.from_numpy(bias)
    return state


def load_mobilenet_v2(path: PathLike, output_stride: int = 32,
                      num_classes: Optional[int] = IMAGENET_CLASSES) -> MobileNetV2:
    """A `MobileNetV2` with the weights of a Google MobileNetV2 1.0 `.tflite` file, in eval mode."""
    network = MobileNetV2(output_stride, num_classes)
    network.load_state_dict(mobilenet_v2_state_dict(path, network))
    return network.eval()
