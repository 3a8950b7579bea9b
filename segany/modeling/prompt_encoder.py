"""Prompt encoder: points, boxes and a low-resolution mask -> sparse and dense embeddings."""

import math
from typing import Optional, Tuple

import torch
from torch import nn

from .common import LayerNorm2d

# Indexes into `PromptEncoder.point_embeddings`.
NEGATIVE_POINT, POSITIVE_POINT, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 0, 1, 2, 3
# Point label that marks padding ("not a point").
PADDING_LABEL = -1


class PromptEncoder(nn.Module):
    # SAM 2 embeds a box as two more points, so the padding token follows boxes too.
    pad_after_boxes: bool = False

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: Tuple[int, int],
        input_image_size: Tuple[int, int],
        mask_in_chans: int,
    ) -> None:
        """
        Args:
            embed_dim: width of every prompt embedding.
            image_embedding_size: (H, W) of the image embedding grid (64, 64 for SAM).
            input_image_size: (H, W) of the padded model input in pixels (1024, 1024).
            mask_in_chans: hidden channels of the mask-prompt downscaler.
        """
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        # Mask prompts are given at 4x the embedding resolution (256x256) and downscaled 4x.
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid: (1, embed_dim, H, W)."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """points (B, N, 2) x,y in input pixels, labels (B, N) -> (B, N [+1], embed_dim)."""
        points = points + 0.5  # centre of the pixel
        if pad:
            # A "not a point" token stands in for the box when there is none.
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, -labels.new_ones(labels.shape[0], 1)], dim=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        is_padding = (labels == PADDING_LABEL)[..., None]
        embedding = torch.where(is_padding, self.not_a_point_embed.weight, embedding)
        embedding = embedding + (labels == 0)[..., None] * self.point_embeddings[NEGATIVE_POINT].weight
        embedding = embedding + (labels == 1)[..., None] * self.point_embeddings[POSITIVE_POINT].weight
        return embedding

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """boxes (B, 4) x0,y0,x1,y1 in input pixels -> (B, 2, embed_dim) corner embeddings."""
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        embedding = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_types = torch.cat(
            [self.point_embeddings[BOX_TOP_LEFT].weight, self.point_embeddings[BOX_BOTTOM_RIGHT].weight]
        )
        return embedding + corner_types

    @staticmethod
    def _batch_size(
        points: Optional[Tuple[torch.Tensor, torch.Tensor]],
        boxes: Optional[torch.Tensor],
        masks: Optional[torch.Tensor],
    ) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def forward(
        self,
        points: Optional[Tuple[torch.Tensor, torch.Tensor]],
        boxes: Optional[torch.Tensor],
        masks: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Embed a batch of B prompts.

        Args:
            points: coordinates (B, N, 2) in input pixels and labels (B, N): 1 foreground,
                0 background, -1 padding.
            boxes: (B, 4) x0,y0,x1,y1 in input pixels.
            masks: (B, 1, 256, 256) mask logits from a previous prediction.
        Returns:
            sparse (B, N_tokens, embed_dim) and dense (B, embed_dim, 64, 64) embeddings.
        """
        bs = self._batch_size(points, boxes, masks)
        device = self.no_mask_embed.weight.device
        sparse = [torch.empty((bs, 0, self.embed_dim), device=device)]
        if points is not None:
            sparse.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
            if self.pad_after_boxes:
                sparse.append(self.not_a_point_embed.weight.expand(bs, 1, -1))
        sparse_embeddings = torch.cat(sparse, dim=1)
        if masks is not None:
            dense_embeddings = self.mask_downscaling(masks)
        else:
            dense_embeddings = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                bs, -1, *self.image_embedding_size
            )
        return sparse_embeddings, dense_embeddings


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of normalised (x, y) coordinates (Tancik et al., 2020)."""

    def __init__(self, num_pos_feats: int = 64, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates in [0, 1] -> (..., 2 * num_pos_feats)."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: Tuple[int, int]) -> torch.Tensor:
        """Encoding of the centres of an (H, W) grid: (2 * num_pos_feats, H, W)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # H, W, 2 (x, y)
        return self._pe_encoding(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
        """coords (B, N, 2) x,y in pixels of an (H, W) image -> (B, N, 2 * num_pos_feats)."""
        # Normalised in the coordinates' own precision (float64 from numpy stays float64 until here).
        size_xy = torch.tensor([image_size[1], image_size[0]], dtype=coords.dtype, device=coords.device)
        return self._pe_encoding((coords / size_xy).to(torch.float))
