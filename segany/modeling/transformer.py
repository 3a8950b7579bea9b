"""Two-way transformer of the mask decoder: prompt tokens and image embedding attend to each other."""

from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .common import MLPBlock


class ImageProjections(NamedTuple):
    """A block's projections of the image keys: token->image keys and values, image->token queries."""

    token_to_image_k: Tensor
    token_to_image_v: Tensor
    image_to_token_q: Tensor


class ImageSide(NamedTuple):
    """What the transformer computes from the image alone, reusable for every prompt on it.

    keys, key_pe: (B, H*W, C) token-major image embedding and its positional encoding;
    first_block: the first block's projections of them.
    """

    keys: Tensor
    key_pe: Tensor
    first_block: ImageProjections


class TwoWayTransformer(nn.Module):
    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int = 2,
    ) -> None:
        """
        Args:
            depth: number of two-way blocks (2 in SAM).
            embedding_dim: token and image-embedding width.
            num_heads: attention heads.
            mlp_dim: hidden width of the token MLP.
            attention_downsample_rate: cross-attention works at embedding_dim // this width.
        """
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def prepare_image(self, image_embedding: Tensor, image_pe: Tensor) -> ImageSide:
        """The prompt-independent part of `forward` for a (B, C, H, W) embedding and its PE."""
        # Token-major and contiguous: every later add and projection then runs on plain memory.
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()  # B, HW, C
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        return ImageSide(keys, key_pe, self.layers[0].project_image(keys, key_pe))

    def forward(
        self,
        image_embedding: Optional[Tensor],
        image_pe: Optional[Tensor],
        point_embedding: Tensor,
        image_side: Optional[ImageSide] = None,
    ) -> Tuple[Tensor, Tensor]:
        """
        Args:
            image_embedding: (B, C, H, W) (B may be 1 for all prompts); image_pe: its positional
                encoding, (1, C, H, W). Not needed when `image_side` is given.
            point_embedding: (B, N_tokens, C) output and prompt tokens.
            image_side: `prepare_image(image_embedding, image_pe)`, computed once per image.
        Returns:
            tokens (B, N_tokens, C) and image keys (B, H * W, C) after attention.
        """
        if image_side is None:
            image_side = self.prepare_image(image_embedding, image_pe)
        keys, key_pe = image_side.keys, image_side.key_pe
        queries = point_embedding
        for i, layer in enumerate(self.layers):
            projections = image_side.first_block if i == 0 else None
            queries, keys = layer(queries, keys, query_pe=point_embedding, key_pe=key_pe, projections=projections)
        attn_out = self.final_attn_token_to_image.tokens_to_image(queries + point_embedding, keys + key_pe, keys)
        queries = self.norm_final_attn(queries + attn_out)
        return queries, keys


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image cross-attention, token MLP, image->token cross-attention."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int,
        skip_first_layer_pe: bool,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        # The first block replaces the tokens by their self-attention: no residual, no PE.
        self.skip_first_layer_pe = skip_first_layer_pe

    def project_image(self, keys: Tensor, key_pe: Tensor) -> ImageProjections:
        """The projections this block makes of the image keys (B, HW, C) and their PE."""
        k = keys + key_pe
        return ImageProjections(
            token_to_image_k=self.cross_attn_token_to_image.k_proj(k),
            token_to_image_v=self.cross_attn_token_to_image.v_proj(keys),
            image_to_token_q=self.cross_attn_image_to_token.q_proj(k),
        )

    def forward(
        self,
        queries: Tensor,
        keys: Tensor,
        query_pe: Tensor,
        key_pe: Tensor,
        projections: Optional[ImageProjections] = None,
    ) -> Tuple[Tensor, Tensor]:
        """queries (B, N, C), keys (B or 1, HW, C) -> updated queries and keys.

        projections: `project_image(keys, key_pe)` when already computed (once per image);
        without them the image is not projected at all (see `Attention.tokens_to_image`).
        """
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        to_image, to_token = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        q = queries + query_pe
        if projections is None:
            keys_with_pe = keys + key_pe
            attn_out = to_image.tokens_to_image(q, keys_with_pe, keys)
        else:
            attn_out = to_image.attend(to_image.q_proj(q), projections.token_to_image_k, projections.token_to_image_v)
        queries = self.norm2(queries + attn_out)
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        if projections is None:
            keys = to_token.image_to_tokens(keys, q, queries, image=keys_with_pe)
        else:
            keys = to_token.image_to_tokens(keys, q, queries, projected_image=projections.image_to_token_q)
        return queries, self.norm4(keys)


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections to embedding_dim // downsample_rate."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide the attention width ({self.internal_dim})")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _separate_heads(self, x: Tensor, batch: int) -> Tensor:
        b, n, c = x.shape
        x = x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # b, heads, N, c
        return x.expand(batch, -1, -1, -1)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q (B, Nq, C), k and v (B, Nk, C) -> (B, Nq, C)."""
        return self.attend(self.q_proj(q), self.k_proj(k), self.v_proj(v))

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attention on projected q (B, Nq, D), k and v (B, Nk, D) -> (B, Nq, C).

        Inputs with batch size 1 are broadcast to the others: the image side, the same for
        every prompt on an image, is projected once instead of once per prompt.
        """
        batch = max(q.shape[0], k.shape[0], v.shape[0])
        q = self._separate_heads(q, batch)
        k = self._separate_heads(k, batch)
        v = self._separate_heads(v, batch)
        out = F.scaled_dot_product_attention(q, k, v)  # B, heads, Nq, c
        return self.out_proj(out.transpose(1, 2).reshape(batch, q.shape[2], self.internal_dim))

    def tokens_to_image(self, tokens: Tensor, image_k: Tensor, image_v: Tensor) -> Tensor:
        """`forward(q=tokens, k=image_k, v=image_v)` for a few tokens and many image positions.

        tokens (B, N, C); image_k, image_v (B, HW, C) -> (B, N, C). The image is not projected:
        the queries go back through the key projection and the attended image through the value
        projection, heads * N instead of internal_dim columns per image position.
        """
        b, n, _ = tokens.shape
        heads, head_dim = self.num_heads, self.internal_dim // self.num_heads
        q = self.q_proj(tokens).view(b, n, heads, head_dim) * head_dim**-0.5
        # q . (W_k x + b_k): the b_k term is the same at every image position, and softmax ignores it.
        q_image = torch.einsum("bnhd,hdc->bhnc", q, self.k_proj.weight.view(heads, head_dim, -1))
        q_image = q_image.reshape(b, heads * n, -1)  # B, heads*N, C
        attn = (q_image @ image_k.transpose(1, 2)).softmax(dim=-1)  # B, heads*N, HW
        # Attention weights sum to 1, so attending to W_v x + b_v is W_v (attended x) + b_v.
        attended = (attn @ image_v).view(b, heads, n, -1)  # B, heads, N, C
        v = torch.einsum("bhnc,hdc->bnhd", attended, self.v_proj.weight.view(heads, head_dim, -1))
        v = v + self.v_proj.bias.view(heads, head_dim)
        return self.out_proj(v.reshape(b, n, self.internal_dim))

    def image_to_tokens(
        self,
        residual: Tensor,
        tokens_k: Tensor,
        tokens_v: Tensor,
        image: Optional[Tensor] = None,
        projected_image: Optional[Tensor] = None,
    ) -> Tensor:
        """`residual + forward(q=image, k=tokens_k, v=tokens_v)`: image positions attend to a few tokens.

        residual (B or 1, HW, C); tokens_k, tokens_v (B, N, C) -> (B, HW, C). Give either
        `image` (B, HW, C), which is then not projected (the keys go back through the query
        projection instead), or `projected_image` = q_proj(image) (B or 1, HW, internal_dim). The
        output projection acts on the N token values per head rather than on every image
        position, and the residual sum is part of the last product.
        """
        b, n, _ = tokens_k.shape
        hw, channels = residual.shape[1:]
        heads, head_dim = self.num_heads, self.internal_dim // self.num_heads
        k = self.k_proj(tokens_k).view(b, n, heads, head_dim) * head_dim**-0.5
        # Scores are laid out (B, heads, N, HW): softmax over N then runs along contiguous rows.
        if projected_image is not None:
            q = projected_image.view(-1, hw, heads, head_dim)
            if q.shape[0] == 1:  # one image for every prompt: one product per head
                scores = torch.einsum("bnhd,phd->bhnp", k, q[0])
            else:
                scores = torch.einsum("bnhd,bphd->bhnp", k, q)
        else:
            k_image = torch.einsum("bnhd,hdc->bhnc", k, self.q_proj.weight.view(heads, head_dim, -1))
            bias_scores = torch.einsum("bnhd,hd->bhn", k, self.q_proj.bias.view(heads, head_dim))
            scores = torch.baddbmm(
                bias_scores.reshape(b, heads * n, 1), k_image.reshape(b, heads * n, channels), image.transpose(1, 2)
            )
        attn = scores.reshape(b, heads, n, hw).softmax(dim=2).view(b, heads * n, hw)
        # Each head's weights sum to 1, so b_out / heads on every value row adds b_out once.
        v = self.v_proj(tokens_v).view(b, n, heads, head_dim)
        v_out = torch.einsum("bnhd,chd->bhnc", v, self.out_proj.weight.view(channels, heads, head_dim))
        v_out = (v_out + self.out_proj.bias / heads).reshape(b, heads * n, channels)
        return torch.baddbmm(residual, attn.transpose(1, 2), v_out)
