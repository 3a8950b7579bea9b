"""SAM 2's image encoder (Ravi et al., 2024): a Hiera trunk and a feature-pyramid neck.

1024x1024 RGB -> the image embedding (256, 64, 64) and two higher-resolution feature maps for
the decoder's upscaling (strides 4 and 8). Hiera (Ryali et al., 2023) is a plain ViT made
hierarchical: four stages at strides 4, 8, 16 and 32, each starting with a block that pools its
queries 2x2 (so the stage's tokens are a quarter of the last one's) and doubles width and heads.
Attention is windowed except in a few global blocks; the position embedding is a small learned
grid, interpolated to the token grid, plus a window-sized one tiled over it. Parameter names
follow the `sam2.1_hiera_*.pt` checkpoints (under `image_encoder.`).
"""

from typing import List, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .common import MLP, run_block


def _window_partition(x: torch.Tensor, window: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """(B, H, W, C) -> (B * windows, window, window, C), zero-padded at the bottom and right;
    also the padded (H, W)."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c).transpose(2, 3)
    return x.reshape(-1, window, window, c), (hp, wp)


def _window_unpartition(windows: torch.Tensor, window: int, padded: Tuple[int, int],
                        size: Tuple[int, int]) -> torch.Tensor:
    """Inverse of `_window_partition`: (B * windows, window, window, C) -> (B, H, W, C)."""
    hp, wp = padded
    b = windows.shape[0] // (hp * wp // window // window)
    x = windows.reshape(b, hp // window, wp // window, window, window, -1).transpose(2, 3)
    x = x.reshape(b, hp, wp, -1)
    return x[:, : size[0], : size[1]] if (hp, wp) != tuple(size) else x


def _pool(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pooling of a channels-last (B, H, W, C) tensor."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), 2, 2).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Self-attention over (B, H, W, C) tokens; with `pool_queries`, queries are max-pooled 2x2
    first, so the output is (B, H/2, W/2, dim_out)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, pool_queries: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.pool_queries = pool_queries
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)
        q, k, v = qkv.unbind(2)  # B, HW, heads, head_dim
        if self.pool_queries:
            q = _pool(q.reshape(b, h, w, -1))
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(x.transpose(1, 2).reshape(b, h, w, -1))


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block over (B, H, W, C) tokens, windowed unless window is 0. The first
    block of a stage pools its queries (`pool_queries`) and widens dim -> dim_out; its shortcut is
    the pooled projection of the normalised input."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, mlp_ratio: float, window: int,
                 pool_queries: bool) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window = window
        self.pool_queries = pool_queries
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, pool_queries)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x  # B, H, W, C
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.pool_queries:
                shortcut = _pool(shortcut)
        window = self.window
        if window:
            x, padded = _window_partition(x, window)
        x = self.attn(x)
        if window:
            if self.pool_queries:  # the windows shrank with their queries
                window //= 2
                size = shortcut.shape[1:3]
                padded = (size[0] + (-size[0]) % window, size[1] + (-size[1]) % window)
            x = _window_unpartition(x, window, padded, shortcut.shape[1:3])
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """7x7 stride-4 convolution: (B, 3, H, W) -> (B, H/4, W/4, C), channels last."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Hiera(nn.Module):
    """(B, 3, S, S) -> features of the 4 stages, (B, C_i, S / 4 / 2^i, S / 4 / 2^i), C_i = embed_dim * 2^i."""

    def __init__(self, embed_dim: int, num_heads: int, stage_depths: Sequence[int], stage_windows: Sequence[int],
                 global_attn_indexes: Sequence[int], pos_embed_size: Sequence[int], mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.gradient_checkpointing = False
        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *pos_embed_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, stage_windows[0], stage_windows[0]))
        self.stage_ends = [sum(stage_depths[: i + 1]) - 1 for i in range(len(stage_depths))]
        self.blocks = nn.ModuleList()
        dim, heads, stage = embed_dim, num_heads, 0
        for i in range(sum(stage_depths)):
            # The first block of a stage keeps the previous stage's window (it pools inside it).
            window = 0 if i in global_attn_indexes else stage_windows[stage]
            starts_stage = i - 1 in self.stage_ends
            dim_out = dim
            if starts_stage:
                dim_out, heads, stage = dim * 2, heads * 2, stage + 1
            self.blocks.append(MultiScaleBlock(dim, dim_out, heads, mlp_ratio, window, pool_queries=starts_stage))
            dim = dim_out
        self.channels = [self.blocks[end].dim_out for end in self.stage_ends]

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """(1, h, w, C): the background grid resized to (h, w) plus the window grid tiled over it."""
        pos = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        window = self.pos_embed_window
        pos = pos + window.tile(1, 1, h // window.shape[2], w // window.shape[3])
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.patch_embed(x)  # B, S/4, S/4, C
        x = x + self.position_embedding(*x.shape[1:3])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = run_block(block, x, self.gradient_checkpointing)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs


class FpnNeck(nn.Module):
    """1x1 convolutions of every stage to `d_model` channels; the stride-16 map also gets the
    stride-32 one, nearest-upsampled 2x (SAM 2 adds top-down features at the two coarsest
    levels only)."""

    def __init__(self, d_model: int, channels: Sequence[int]) -> None:
        super().__init__()
        # Coarsest first, as in the checkpoints.
        self.convs = nn.ModuleList(nn.Sequential() for _ in channels)
        for conv, c in zip(self.convs, reversed(channels)):
            conv.add_module("conv", nn.Conv2d(c, d_model, kernel_size=1))

    def forward(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """Stage features, finest first -> the 3 finest levels (strides 4, 8, 16) at d_model."""
        n = len(features) - 1
        coarsest = self.convs[0](features[n])
        top_down = F.interpolate(coarsest.float(), scale_factor=2.0, mode="nearest")
        embedding = self.convs[1](features[n - 1]) + top_down
        return [self.convs[n - i](features[i]) for i in range(n - 1)] + [embedding]


class ImageEncoderHiera(nn.Module):
    """(B, 3, img_size, img_size) normalised pixels -> (B, out_chans, img_size / 16, img_size / 16)."""

    def __init__(
        self,
        img_size: int = 1024,
        embed_dim: int = 96,
        num_heads: int = 1,
        stage_depths: Sequence[int] = (1, 2, 7, 2),
        stage_windows: Sequence[int] = (8, 4, 14, 7),
        global_attn_indexes: Sequence[int] = (5, 7, 9),
        pos_embed_size: Sequence[int] = (7, 7),
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.trunk = Hiera(embed_dim, num_heads, stage_depths, stage_windows, global_attn_indexes, pos_embed_size,
                           mlp_ratio)
        self.neck = FpnNeck(out_chans, self.trunk.channels)
        # SAM 2 adds this "no memory" embedding to every image's features when it has no video
        # memory to condition them on, as for single images.
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, out_chans))
        self.early_channels = out_chans

    @property
    def gradient_checkpointing(self) -> bool:
        return self.trunk.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value: bool) -> None:
        self.trunk.gradient_checkpointing = value

    @property
    def num_layers(self) -> int:
        return len(self.trunk.blocks) + 1

    def layer_depth(self, name: str) -> int:
        """Depth of parameter `name` for layer-wise lr decay: patch and position embeddings 0,
        block i i + 1, the neck `num_layers`."""
        parts = name.split(".")
        if parts[0] != "trunk":
            return self.num_layers
        return int(parts[2]) + 1 if parts[1] == "blocks" else 0

    def forward_with_early(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """The embedding (B, out_chans, g, g) and the neck's stride-4 and stride-8 maps
        (B, out_chans, 4g, 4g) and (B, out_chans, 2g, 2g), which SAM 2's decoder projects."""
        stride4, stride8, embedding = self.neck(self.trunk(x))
        return embedding + self.no_mem_embed.view(1, -1, 1, 1), (stride4, stride8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_early(x)[0]
