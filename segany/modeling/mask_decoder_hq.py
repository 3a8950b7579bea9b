"""SAM-HQ's mask decoder (Ke et al., 2023): SAM's decoder plus a high-quality output token.

The HQ token's mask is read from a 4x-upscaled feature that fuses the encoder's early features
(the first global-attention block of the ViT) with the image embedding and SAM's own upscaled
mask features. Parameter names follow the `sam_hq_vit_*.pth` checkpoints.
"""

from typing import Optional, Tuple

import torch
from torch import nn

from .common import MLP, LayerNorm2d
from .mask_decoder import MaskDecoder, upscaled_to_image
from .transformer import ImageSide


def _upscaler(in_chans: int, mid_chans: int, out_chans: int) -> nn.Sequential:
    """Two 2x2 stride-2 transposed convolutions with LayerNorm2d and GELU between: 4x the side."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_chans, mid_chans, kernel_size=2, stride=2),
        LayerNorm2d(mid_chans),
        nn.GELU(),
        nn.ConvTranspose2d(mid_chans, out_chans, kernel_size=2, stride=2),
    )


class MaskDecoderHQ(MaskDecoder):
    uses_early_features = True
    image_feature_names = ("hq_features",)
    # What SAM-HQ adds to SAM's decoder (and trains, SAM's weights frozen).
    HQ_MODULES = ("hf_token", "hf_mlp", "compress_vit_feat", "embedding_encoder", "embedding_maskfeature")

    def __init__(self, *, early_dim: int, **kwargs) -> None:
        """early_dim: channels of the encoder's early features; the rest as `MaskDecoder`."""
        super().__init__(**kwargs)
        dim = self.transformer_dim
        self.hf_token = nn.Embedding(1, dim)
        self.hf_mlp = MLP(dim, dim, dim // 8, 3)
        self.compress_vit_feat = _upscaler(early_dim, dim, dim // 8)
        self.embedding_encoder = _upscaler(dim, dim // 4, dim // 8)
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(dim // 8, dim // 4, 3, 1, 1),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.Conv2d(dim // 4, dim // 8, 3, 1, 1),
        )

    def image_features(self, image_embeddings: torch.Tensor,
                       early_features: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, ...]:
        """(hq_features,): (B, C/8, 4H, 4W) from the embedding (B, C, H, W) and the early
        features (B, early_dim, H, W)."""
        if early_features is None:
            raise ValueError("SAM-HQ's decoder needs the encoder's early features")
        return (self.embedding_encoder(image_embeddings) + self.compress_vit_feat(early_features),)

    def image_feature_shapes(self, grid: Tuple[int, int]) -> Tuple[Tuple[int, ...], ...]:
        return ((self.transformer_dim // 8, 4 * grid[0], 4 * grid[1]),)

    def output_tokens(self) -> torch.Tensor:
        """(6, C): the IoU token, SAM's 4 mask tokens, the HQ token."""
        return torch.cat([self.iou_token.weight, self.mask_tokens.weight, self.hf_token.weight], dim=0)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        image_side: Optional[ImageSide] = None,
        iou_threshold: Optional[float] = None,
        high_res_features: Tuple[torch.Tensor, ...] = (),
        hq_token_only: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One mask per prompt, as SAM-HQ's predictor gives it: SAM's mask (with multimask_output
        the one of the 3 ambiguity-aware masks with the highest predicted IoU, else the single-mask
        output) plus the HQ token's mask, or the HQ mask alone with `hq_token_only`.

        Returns mask logits (B, 1, 4H, 4W) and SAM's predicted IoU of the chosen mask (B, 1);
        other arguments as `MaskDecoder.forward`, high_res_features = `image_features(...)`.
        """
        (hq_features,) = high_res_features
        hs, keys = self._transformer(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                                     image_side)
        bs = hs.shape[0]
        h, w = image_pe.shape[-2:]
        iou_pred = self.iou_prediction_head(hs[:, 0, :])  # B, 4
        if multimask_output:
            iou_pred, best = iou_pred[:, 1:].max(dim=1, keepdim=True)
            best = best[:, 0] + 1
        else:
            iou_pred, best = iou_pred[:, :1], torch.zeros(bs, dtype=torch.long, device=hs.device)
        masks = hs.new_full((bs, 1, 4 * h, 4 * w), float("nan"))
        wanted = torch.ones(bs, dtype=torch.bool, device=hs.device)
        if iou_threshold is not None:
            wanted = iou_pred[:, 0] > iou_threshold
            if not wanted.any():
                return masks, iou_pred
        hs, keys, best = hs[wanted], keys[wanted], best[wanted]
        upscaled = upscaled_to_image(self._upscale(keys, h, w).transpose(1, 2), h, w)  # b, C/8, 4H, 4W
        hq_masks = self._hq_masks(hs, upscaled, hq_features)
        if hq_token_only:
            chosen = hq_masks
        else:
            hyper_in = torch.stack([mlp(hs[:, 1 + i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
            sam_hyper = hyper_in[torch.arange(len(hs), device=hs.device), best]  # b, C/8
            chosen = sam_hyper.unsqueeze(1) @ upscaled.flatten(2) + hq_masks
        masks[wanted] = chosen.view(len(hs), 1, 4 * h, 4 * w)
        return masks, iou_pred

    def _masks(self, hs: torch.Tensor, hyper_in: torch.Tensor, keys: torch.Tensor, h: int, w: int,
               high_res_features: Tuple[torch.Tensor, ...] = (), hq_token_only: bool = False) -> torch.Tensor:
        """`predict_masks`' masks (B, M, 4H, 4W): each SAM token's mask plus the HQ token's, the
        answer SAM-HQ's predictor gives when it picks that token (for graphs that choose afterwards);
        with `hq_token_only` the HQ token's mask alone in every slot, its predictor's answer then."""
        upscaled = upscaled_to_image(self._upscale(keys, h, w).transpose(1, 2), h, w)  # B, C/8, 4H, 4W
        hq_masks = self._hq_masks(hs, upscaled, high_res_features[0])  # B, 1, 4H*4W
        masks = hq_masks if hq_token_only else hyper_in @ upscaled.flatten(2) + hq_masks  # B, M or 1, 4H*4W
        return masks.expand(-1, hyper_in.shape[1], -1).reshape(len(hs), -1, 4 * h, 4 * w)

    def _hq_masks(self, hs: torch.Tensor, upscaled: torch.Tensor, hq_features: torch.Tensor) -> torch.Tensor:
        """The HQ token's mask logits (B, 1, 4H*4W) from the token outputs (B, T, C), SAM's
        upscaled features (B, C/8, 4H, 4W) and `image_features(...)`."""
        fused = self.embedding_maskfeature(upscaled) + hq_features
        return self.hf_mlp(hs[:, self.num_mask_tokens + 1]).unsqueeze(1) @ fused.flatten(2)
