"""MobileNetV2 (Sandler et al., 2018) and a SAM image encoder built on it.

`MobileNetV2` is the ImageNet classifier of the paper, with batch norm folded into the
convolutions (each conv has a bias) and TensorFlow's "SAME" padding, so that Google's published
weights (`segany.modeling.tflite_weights`) give the network they were trained as.
`ImageEncoderMobileNet` is its convolutional trunk, run at output stride 16 by dilation, with
SAM's neck to the image embedding.
"""

from typing import List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .common import LayerNorm2d, run_block

# (expansion t, output channels c, repeats n, first stride s) of the paper's Table 2.
INVERTED_RESIDUAL_SETTING: Tuple[Tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
IMAGENET_CLASSES = 1001  # index 0 is "background" in Google's release


_FUSED_CONV_AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _can_fuse_relu6(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    """Whether oneDNN may run the conv and its ReLU6 as one pass: a float32 CPU call that no
    gradient flows through, input, weight or bias (the fused op has no gradient, no autocast and
    no ONNX form)."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, *conv.parameters()))
    return (_FUSED_CONV_AVAILABLE and x.device.type == "cpu" and x.dtype == conv.weight.dtype == torch.float32
            and not needs_grad and not torch.is_autocast_enabled("cpu") and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling())


class ConvSame(nn.Conv2d):
    """A conv with TensorFlow's "SAME" padding (output side ceil(input / stride), and where the
    padding is odd the extra row and column go at the bottom and right), followed by ReLU6 where
    `relu6` is set."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, relu6: bool = False) -> None:
        if dilation > 1 and (stride > 1 or kernel_size % 2 == 0):
            raise ValueError("ConvSame: a dilated conv must have stride 1 and an odd kernel (even padding)")
        super().__init__(in_chans, out_chans, kernel_size, stride, padding=0, dilation=dilation, groups=groups)
        self.relu6 = relu6

    def same_padding(self, height: int, width: int) -> List[int]:
        """TensorFlow's "SAME" padding of a (height, width) input, in F.pad's order: left, right,
        top, bottom."""
        pads: List[int] = []
        for size in (width, height):
            extent = (self.kernel_size[0] - 1) * self.dilation[0] + 1
            total = max((-(-size // self.stride[0]) - 1) * self.stride[0] + extent - size, 0)
            pads += [total // 2, total - total // 2]
        return pads

    def padded_weight(self, height: int, width: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """The weight and the symmetric (top, left) padding for F.conv2d that give the SAME
        padding of a (height, width) input. Where it is odd (one more at the bottom or right), the
        conv pads the larger amount on both sides and the kernel gets a leading zero row or
        column: each window then starts one input earlier, on a zero weight, so the conv sees
        TensorFlow's inputs without a padded copy of them (a copy costs more than the conv)."""
        left, right, top, bottom = self.same_padding(height, width)
        weight = self.weight  # (out, in / groups, k, k)
        if right > left:  # concatenated rather than padded: ONNX export needs the kernel's shape
            weight = torch.cat((weight.new_zeros(*weight.shape[:3], 1), weight), dim=3)
        if bottom > top:
            weight = torch.cat((weight.new_zeros(*weight.shape[:2], 1, weight.shape[3]), weight), dim=2)
        return weight, (bottom, right)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, padding = self.padded_weight(*x.shape[-2:])
        if self.relu6 and _can_fuse_relu6(x, self):
            return torch.ops.mkldnn._convolution_pointwise(x, weight, self.bias, padding, self.stride, self.dilation,
                                                           self.groups, "hardtanh", [0.0, 6.0], "")
        y = F.conv2d(x, weight, self.bias, self.stride, padding, self.dilation, self.groups)
        return F.relu6(y, inplace=True) if self.relu6 else y


class InvertedResidual(nn.Module):
    """1x1 expansion + ReLU6, 3x3 depthwise + ReLU6, linear 1x1 projection; residual when shapes allow."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, expansion: int, dilation: int = 1) -> None:
        super().__init__()
        hidden = in_chans * expansion
        self.expand = ConvSame(in_chans, hidden, 1, relu6=True) if expansion != 1 else None
        self.depthwise = ConvSame(hidden, hidden, 3, stride, dilation, groups=hidden, relu6=True)
        self.project = ConvSame(hidden, out_chans, 1)
        self.use_residual = stride == 1 and in_chans == out_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.use_residual else y


class MobileNetV2(nn.Module):
    """MobileNetV2 1.0: `stem`, 17 inverted residual `blocks`, then (with num_classes) the 1x1
    `head` to 1280 channels and the `classifier`.

    output_stride: 32 as in the paper; 16 or 8 keep the resolution of the later stages and
    dilate their depthwise convs instead (as DeepLabv3 does), with the same weights.
    num_classes: 1001 for Google's ImageNet weights; None for the trunk alone.
    """

    def __init__(self, output_stride: int = 32, num_classes: Optional[int] = IMAGENET_CLASSES) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.stem = ConvSame(3, STEM_CHANNELS, 3, stride=2, relu6=True)
        blocks, self.block_strides = [], []
        in_chans, stride, dilation = STEM_CHANNELS, 2, 1
        for expansion, out_chans, repeats, first_stride in INVERTED_RESIDUAL_SETTING:
            for i in range(repeats):
                block_stride = first_stride if i == 0 else 1
                if stride * block_stride > output_stride:
                    block_dilation, dilation, block_stride = dilation, dilation * block_stride, 1
                else:
                    block_dilation = dilation
                    stride *= block_stride
                blocks.append(InvertedResidual(in_chans, out_chans, block_stride, expansion, block_dilation))
                self.block_strides.append(stride)
                in_chans = out_chans
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = in_chans
        self.gradient_checkpointing = False
        self.head = self.classifier = None
        if num_classes is not None:
            self.head = ConvSame(in_chans, HEAD_CHANNELS, 1, relu6=True)
            self.classifier = ConvSame(HEAD_CHANNELS, num_classes, 1)

    def forward_features(self, x: torch.Tensor, taps: Tuple[int, ...] = ()) -> Tuple[torch.Tensor, ...]:
        """(B, 3, H, W) pixels mapped to [-1, 1] -> the outputs of the blocks numbered in `taps`,
        then the last one's (B, 320, H / s, W / s), s the output stride."""
        x = self.stem(x)
        tapped = []
        for index, block in enumerate(self.blocks):
            x = run_block(block, x, self.gradient_checkpointing)
            if index in taps:
                tapped.append(x)
        return (*tapped, x)

    def last_block_at(self, stride: int) -> int:
        """The index of the last block whose output has the given stride."""
        return max(index for index, block_stride in enumerate(self.block_strides) if block_stride == stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels mapped to [-1, 1] -> (B, num_classes) logits."""
        if self.classifier is None:
            raise RuntimeError("this MobileNetV2 was built without its classifier (num_classes=None)")
        features = self.head(self.forward_features(x)[-1])
        return self.classifier(features.mean(dim=(2, 3), keepdim=True)).flatten(1)


class ImageEncoderMobileNet(nn.Module):
    """MobileNetV2 trunk + SAM's neck: (B, 3, img_size, img_size) -> (B, out_chans, grid, grid).

    grid = img_size / output_stride. Parameters: `trunk.*` as `MobileNetV2`, `neck.*` as the
    ViT encoder's neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d). For a decoder with
    high-resolution features, `forward_with_early` also returns the trunk's stride-4 and stride-8
    maps (`early_channels`: 24 and 32 channels).
    """

    def __init__(self, img_size: int = 512, out_chans: int = 256, output_stride: int = 16) -> None:
        super().__init__()
        self.img_size = img_size
        self.trunk = MobileNetV2(output_stride, num_classes=None)
        self.neck = nn.Sequential(
            nn.Conv2d(self.trunk.out_channels, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.high_res_taps = (self.trunk.last_block_at(4), self.trunk.last_block_at(8))
        self.early_channels = tuple(self.trunk.blocks[index].project.out_channels for index in self.high_res_taps)

    @property
    def gradient_checkpointing(self) -> bool:
        return self.trunk.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value: bool) -> None:
        self.trunk.gradient_checkpointing = value

    def layer_depth(self, name: str) -> int:
        """Depth of parameter `name` (relative to this module) for layer-wise lr decay: the stem 0,
        trunk block i gets i + 1, the neck `num_layers`."""
        if name.startswith("trunk.blocks."):
            return int(name.split(".")[2]) + 1
        return 0 if name.startswith("trunk.") else self.num_layers

    @property
    def num_layers(self) -> int:
        return len(self.trunk.blocks) + 1

    def forward_with_early(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """The embedding (B, out_chans, grid, grid) and the trunk's stride-4 and stride-8 maps
        (B, 24, 4 grid, 4 grid) and (B, 32, 2 grid, 2 grid) (at output stride 16)."""
        # Depthwise convs run faster on channels-last tensors on the CPU.
        stride4, stride8, x = self.trunk.forward_features(x.contiguous(memory_format=torch.channels_last),
                                                          self.high_res_taps)
        return self.neck(x).contiguous(), (stride4.contiguous(), stride8.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trunk.forward_features(x.contiguous(memory_format=torch.channels_last))[-1]
        return self.neck(x).contiguous()
