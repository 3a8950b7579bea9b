"""TinyViT image encoder (Wu et al., 2022) as MobileSAM distils it from SAM's ViT-H.

1024x1024 RGB -> (256, 64, 64), like the ViT it replaces: a convolutional stem to stride 4,
one stage of MBConv blocks, three stages of windowed attention with a learned bias per relative
offset and a depthwise convolution between attention and MLP, patch merging between stages (the
last one keeps the stride, so the output stride is 16), and SAM's neck. Parameter names follow
MobileSAM's checkpoint (`mobile_sam.pt`) so it loads without renaming; its ImageNet classifier
head (`norm_head`, `head`) is kept, unused, so checkpoints convert both ways unchanged.
"""

from typing import List, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .common import LayerNorm2d, run_block
from .image_encoder import window_partition, window_unpartition


class ConvBN(nn.Module):
    """Convolution without bias, then batch norm (`c`, `bn`); in eval mode one convolution with
    the norm folded into its weights (one pass over the activations instead of two), run
    channels-last (faster in oneDNN on the CPU; the activations follow the weights' layout)."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_chans, out_chans, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.bn(self.c(x))
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        weight = (self.c.weight * scale.view(-1, 1, 1, 1)).contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, weight, bias, self.c.stride, self.c.padding, groups=self.c.groups)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions: (B, 3, S, S) -> (B, C, S / 4, S / 4)."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_chans, embed_dim // 2, 3, 2), nn.GELU(), ConvBN(embed_dim // 2, embed_dim, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU. (B, C, H, W)."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """1x1 conv, 3x3 depthwise conv of `stride`, 1x1 conv: (B, C, H, W) -> (B, H*W / stride^2, C')."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))
        return x.flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head attention inside a window of ws x ws tokens, with a learned bias per head and
    relative offset (|dy|, |dx|), and LayerNorm on its input. (B, ws*ws, C) -> same."""

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.window_size = window_size
        # Offset (|dy|, |dx|) is entry |dy| * ws + |dx| of each head's table (the order in which
        # TinyViT numbers the offsets it meets).
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))

    def bias(self) -> torch.Tensor:
        """(heads, N, N) attention bias between the N = ws^2 cells of a window, row-major."""
        cells = torch.arange(self.window_size, device=self.attention_biases.device)
        y, x = cells.repeat_interleave(self.window_size), cells.repeat(self.window_size)
        index = (y[:, None] - y[None]).abs() * self.window_size + (x[:, None] - x[None]).abs()
        return self.attention_biases[:, index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        # Per head, the projection holds q, k, v side by side: (head, [q | k | v]).
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3, self.head_dim).permute(3, 0, 2, 1, 4)
        q, k, v = (t.flatten(0, 1) for t in qkv)  # B*heads, N, head_dim
        # bias + q k^T in one baddbmm: on the CPU, SDPA with an additive mask spent a quarter of
        # its time checking the mask for rows of -inf.
        logits = torch.baddbmm(self.bias().repeat(b, 1, 1), q * self.head_dim**-0.5, k.transpose(1, 2))
        x = (logits.softmax(dim=-1) @ v).view(b, self.num_heads, n, self.head_dim)
        return self.proj(x.transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    """LayerNorm, Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention, 3x3 depthwise conv, MLP on (B, H*W, C) tokens of an H x W grid."""

    def __init__(self, dim: int, grid: int, num_heads: int, window_size: int, mlp_ratio: float) -> None:
        super().__init__()
        self.grid = grid
        self.window_size = window_size
        self.attn = Attention(dim, num_heads, window_size)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))  # before local_conv: the checkpoints' key order
        self.local_conv = ConvBN(dim, dim, 3, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        ws, g = self.window_size, self.grid
        if g == ws:
            x = x + self.attn(x)
        else:
            # The zero padding goes through the attention's LayerNorm and is attended to, as in
            # TinyViT; only the real tokens are kept.
            windows, padded = window_partition(x.view(b, g, g, c), ws)
            windows = self.attn(windows.view(-1, ws * ws, c)).view(-1, ws, ws, c)
            x = x + window_unpartition(windows, ws, padded, (g, g)).view(b, n, c)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, g, g)).view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """MBConv blocks, then patch merging: (B, C, H, W) -> (B, H*W/4, C')."""

    def __init__(self, dim: int, depth: int, out_dim: int, expand_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, 2)


class AttentionStage(nn.Module):
    """TinyViT blocks on a grid x grid token grid, then patch merging if `out_dim`."""

    def __init__(self, dim: int, grid: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 out_dim: int = 0, stride: int = 2) -> None:
        super().__init__()
        self.grid = grid
        self.blocks = nn.ModuleList(TinyViTBlock(dim, grid, num_heads, window_size, mlp_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride) if out_dim else None


class ImageEncoderTinyViT(nn.Module):
    """(B, 3, img_size, img_size) normalised pixels -> (B, out_chans, img_size / 16, img_size / 16)."""

    def __init__(
        self,
        img_size: int = 1024,
        stage_dims: Sequence[int] = (64, 128, 160, 320),
        stage_depths: Sequence[int] = (2, 2, 6, 2),
        stage_heads: Sequence[int] = (4, 5, 10),
        stage_windows: Sequence[int] = (7, 14, 7),
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        num_classes: int = 1000,
    ) -> None:
        """stage_dims, stage_depths: width and blocks of the 4 stages (strides 4, 8, 16, 16; the
        first is convolutional); stage_heads, stage_windows: heads and window side of the 3
        attention stages."""
        super().__init__()
        self.img_size = img_size
        self.gradient_checkpointing = False
        dims = list(stage_dims)
        self.patch_embed = PatchEmbed(3, dims[0])
        grids = [img_size // 4, img_size // 8, img_size // 16, img_size // 16]
        self.layers = nn.ModuleList([ConvStage(dims[0], stage_depths[0], dims[1], mlp_ratio)])
        for i in range(1, 4):
            out_dim = dims[i + 1] if i < 3 else 0
            self.layers.append(AttentionStage(dims[i], grids[i], stage_depths[i], stage_heads[i - 1], stage_windows[i - 1],
                                              mlp_ratio, out_dim, stride=2 if i < 2 else 1))
        self.norm_head = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.early_channels = dims[2]

    def _blocks(self) -> List[nn.Module]:
        return [block for layer in self.layers for block in layer.blocks]

    def layer_depth(self, name: str) -> int:
        """Depth of parameter `name` for layer-wise lr decay: the stem 0, the i-th block overall
        (patch merging counted with the block before it) i + 1, the neck and head `num_layers`."""
        parts = name.split(".")
        if parts[0] == "layers":
            layer = int(parts[1])
            before = sum(len(self.layers[i].blocks) for i in range(layer))
            within = int(parts[3]) if parts[2] == "blocks" else len(self.layers[layer].blocks) - 1
            return before + within + 1
        return 0 if parts[0] == "patch_embed" else self.num_layers

    @property
    def num_layers(self) -> int:
        return len(self._blocks()) + 1

    def forward_with_early(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The embedding (B, out_chans, g, g) and the early features SAM-HQ fuses: the output of
        the second stage's patch merging, (B, stage_dims[2], g, g)."""
        x = self.patch_embed(x)  # B, C0, S/4, S/4
        for block in self.layers[0].blocks:
            x = run_block(block, x, self.gradient_checkpointing)
        x = self.layers[0].downsample(x)  # B, L, C1
        for i, layer in enumerate(self.layers[1:], 1):
            for block in layer.blocks:
                x = run_block(block, x, self.gradient_checkpointing)
            if layer.downsample is not None:
                g = layer.grid
                x = layer.downsample(x.transpose(1, 2).reshape(x.shape[0], -1, g, g))
            if i == 1:
                early = x
        g = self.img_size // 16
        embedding = self.neck(x.transpose(1, 2).reshape(x.shape[0], -1, g, g))
        return embedding, early.transpose(1, 2).reshape(x.shape[0], -1, g, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_early(x)[0]
