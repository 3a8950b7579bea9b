"""ViT image encoder: 1024x1024 RGB -> (256, 64, 64) image embedding.

An MAE-style ViT with windowed attention in most blocks and global attention in a few,
decomposed relative position bias, and a convolutional neck to the prompt embedding width.
Parameter names follow the official checkpoints so they load without renaming.
"""

from typing import Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .common import LayerNorm2d, MLPBlock, run_block


class ImageEncoderViT(nn.Module):
    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: Sequence[int] = (),
    ) -> None:
        """
        Args:
            img_size: side of the square, padded input image in pixels.
            patch_size: side of a patch in pixels; the embedding grid is img_size // patch_size.
            embed_dim, depth, num_heads, mlp_ratio: ViT width, number of blocks, heads, MLP width.
            out_chans: channels of the output embedding (the prompt embedding width).
            window_size: side of the attention windows in tokens (0: all blocks global).
            global_attn_indexes: blocks that attend over the whole grid.
        """
        super().__init__()
        self.img_size = img_size
        self.early_channels = embed_dim
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed: Optional[nn.Parameter] = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.gradient_checkpointing = False
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                use_rel_pos=use_rel_pos,
                window_size=0 if i in global_attn_indexes else window_size,
                grid_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def layer_depth(self, name: str) -> int:
        """Depth of parameter `name` (relative to this module) for layer-wise lr decay: patch and
        position embeddings 0, block i gets i + 1, the neck `num_layers`."""
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.num_layers if name.startswith("neck.") else 0

    @property
    def num_layers(self) -> int:
        return len(self.blocks) + 1

    def forward_with_early(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The embedding (B, out_chans, grid, grid) and the early features SAM-HQ fuses: the
        output of the first global-attention block, (B, embed_dim, grid, grid) (None without one)."""
        x = self.patch_embed(x)  # B, grid, grid, C
        if self.pos_embed is not None:
            x = x + self.pos_embed
        early = None
        for block in self.blocks:
            x = run_block(block, x, self.gradient_checkpointing)
            if early is None and block.window_size == 0:
                early = x
        return self.neck(x.permute(0, 3, 1, 2)), None if early is None else early.permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, img_size, img_size) normalised pixels -> (B, out_chans, grid, grid)."""
        return self.forward_with_early(x)[0]


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, 3, H, W) -> (B, H/p, W/p, C)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Block(nn.Module):
    """Pre-norm transformer block with windowed (window_size > 0) or global attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        use_rel_pos: bool,
        window_size: int,
        grid_size: Tuple[int, int],
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            input_size=(window_size, window_size) if window_size > 0 else grid_size,
        )
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1:3]
            x, padded_hw = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, padded_hw, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Attention(nn.Module):
    """Multi-head self-attention over a 2-D token grid with decomposed relative position bias."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        input_size: Optional[Tuple[int, int]] = None,
    ) -> None:
        """input_size: (H, W) of the token grid the relative position tables are sized for."""
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("relative position bias needs the token grid size (input_size)")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        b, h, w, _ = x.shape
        # qkv: 3, B * heads, H * W, head_dim
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, h * w, -1).unbind(0)
        rel_pos = (self.rel_pos_h, self.rel_pos_w) if self.use_rel_pos else None
        # The blocked loop (buffers written in place) is for eager inference; autograd, torch.compile
        # and tracing (ONNX export) get the plain form.
        if (torch.is_grad_enabled() and x.requires_grad) or torch.compiler.is_compiling() or torch.jit.is_tracing():
            x = attention(q, k, v, self.scale, (h, w), rel_pos)
        else:
            x = blocked_attention(q, k, v, self.scale, (h, w), rel_pos)
        x = x.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(x)


def window_partition(x: torch.Tensor, window_size: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """(B, H, W, C) -> (B * windows, ws, ws, C), zero-padding H and W up to multiples of ws.

    Returns the windows and the padded (H, W).
    """
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, padded_hw: Tuple[int, int], hw: Tuple[int, int]
) -> torch.Tensor:
    """Inverse of `window_partition`: (B * windows, ws, ws, C) -> (B, H, W, C)."""
    hp, wp = padded_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window_size) * (wp // window_size))
    x = windows.view(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :].contiguous()
    return x


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative position embeddings for every (query, key) pair along one axis.

    rel_pos: (L, C) table; resized linearly when L != 2 * max(q_size, k_size) - 1
    (e.g. a checkpoint used at another image size). Returns (q_size, k_size, C).
    """
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        resized = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_rel_dist, mode="linear"
        )
        rel_pos = resized.reshape(-1, max_rel_dist).permute(1, 0)
    # Scale coordinates when query and key grids differ in size.
    q_coords = torch.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


def decomposed_rel_pos(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, grid: Tuple[int, int]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The two factors of the MViTv2 decomposed relative position bias.

    q: (B, H*W, C) unscaled queries on an (H, W) grid attending to keys on the same grid.
    The bias of query (y, x) for key (ky, kx) is rel_h[b, y, x, ky] + rel_w[b, y, x, kx]:
    two small tables instead of an (H*W) x (H*W) one. Returns rel_h (B, H, W, H) and
    rel_w (B, H, W, W).
    """
    h, w = grid
    table_h = get_rel_pos(h, h, rel_pos_h)  # H, H, C
    table_w = get_rel_pos(w, w, rel_pos_w)  # W, W, C
    grid_q = q.reshape(q.shape[0], h, w, q.shape[-1])
    rel_h = torch.einsum("bhwc,hkc->bhwk", grid_q, table_h)
    rel_w = torch.einsum("bhwc,wkc->bhwk", grid_q, table_w)
    return rel_h, rel_w


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    grid: Tuple[int, int],
    rel_pos: Optional[Tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """softmax(scale q k^T + bias) v with the whole attention map built: the differentiable path.

    q, k, v: (B, H*W, C) on an (H, W) grid; rel_pos: the (rel_pos_h, rel_pos_w) tables or None.
    """
    attn = (q * scale) @ k.transpose(-2, -1)  # B, HW, HW
    if rel_pos is not None:
        h, w = grid
        rel_h, rel_w = decomposed_rel_pos(q, *rel_pos, grid)
        attn = attn.view(-1, h, w, h, w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
        attn = attn.view(-1, h * w, h * w)
    return attn.softmax(dim=-1) @ v


# Size of the attention-map block computed at once (bytes): small enough to stay in cache.
ATTENTION_BLOCK_BYTES = 16 * 2**20


def blocked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    grid: Tuple[int, int],
    rel_pos: Optional[Tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """Same result as `attention`, for inference: the map is built a block of query rows at a time.

    Global attention over a 64x64 grid would otherwise build 4096x4096 maps per head (64 MiB
    each) and pass over them four times (bias add, softmax, product); one reused block that fits
    in cache costs a third of that time. Each block: bias, then bias + scale q k^T in one GEMM,
    softmax in place, product with v.
    """
    n_batch, n, c = q.shape
    h, w = grid
    if rel_pos is not None:
        rel_h, rel_w = decomposed_rel_pos(q, *rel_pos, grid)
    row_bytes = w * n * q.element_size()
    rows = max(1, min(h, ATTENTION_BLOCK_BYTES // row_bytes))
    batch = max(1, min(n_batch, ATTENTION_BLOCK_BYTES // (rows * row_bytes)))
    keys_t = k.transpose(-2, -1)
    q = q * scale
    out = torch.empty(n_batch, n, v.shape[-1], dtype=v.dtype, device=v.device)
    block = torch.empty(batch, rows * w, n, dtype=q.dtype, device=q.device)
    for b0 in range(0, n_batch, batch):
        b1 = min(b0 + batch, n_batch)
        for y0 in range(0, h, rows):
            y1 = min(y0 + rows, h)
            scores = block[: b1 - b0, : (y1 - y0) * w]
            queries = slice(y0 * w, y1 * w)
            if rel_pos is not None:
                bias = scores.view(b1 - b0, y1 - y0, w, h, w)
                torch.add(rel_h[b0:b1, y0:y1, :, :, None], rel_w[b0:b1, y0:y1, :, None, :], out=bias)
                scores.baddbmm_(q[b0:b1, queries], keys_t[b0:b1])
            else:
                torch.bmm(q[b0:b1, queries], keys_t[b0:b1], out=scores)
            scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()
            scores.div_(scores.sum(dim=-1, keepdim=True))
            torch.bmm(scores, v[b0:b1], out=out[b0:b1, queries])
    return out
