"""SAM 2's mask decoder (Ravi et al., 2024): SAM's, plus high-resolution features and an object score.

Three changes to SAM's decoder: the upscaling adds the encoder's stride-8 and stride-4 features
(projected by `conv_s1` and `conv_s0`, once per image); an extra output token predicts whether
the prompted object is in the image at all (a logit); the IoU head ends in a sigmoid. Without
multimask output, a single mask whose logits are unstable (its area changes by more than 2%
between thresholds -0.05 and +0.05) is replaced by the best of the three multimask outputs, as
SAM 2's builders set it up for images. Parameter names follow `sam2.1_hiera_*.pt` (under
`sam_mask_decoder.`, renamed `mask_decoder.`).
"""

from typing import Optional, Tuple

import torch
from torch import nn

from .common import MLP
from .mask_decoder import MaskDecoder
from .transformer import ImageSide


class MaskDecoderSAM2(MaskDecoder):
    uses_early_features = True
    image_feature_names = ("high_res_feats_0", "high_res_feats_1")
    leading_tokens = 1

    def __init__(self, *, stability_delta: float = 0.05, stability_thresh: float = 0.98,
                 dynamic_multimask_via_stability: bool = True, **kwargs) -> None:
        """stability_delta, stability_thresh: the single-mask fallback (module docstring);
        dynamic_multimask_via_stability: whether it is on. The rest as `MaskDecoder`."""
        super().__init__(**kwargs)
        dim = self.transformer_dim
        self.obj_score_token = nn.Embedding(1, dim)
        self.pred_obj_score_head = MLP(dim, dim, 1, 3)
        self.iou_prediction_head.sigmoid_output = True
        self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.stability_delta = stability_delta
        self.stability_thresh = stability_thresh

    def image_features(self, image_embeddings: torch.Tensor,
                       early_features: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
                       ) -> Tuple[torch.Tensor, ...]:
        """(stride-4 (B, C/8, 4H, 4W), stride-8 (B, C/4, 2H, 2W)) from the encoder's two finest
        feature maps (B, C, 4H, 4W) and (B, C, 2H, 2W)."""
        if early_features is None:
            raise ValueError("SAM 2's decoder needs the encoder's high-resolution features")
        stride4, stride8 = early_features
        return self.conv_s0(stride4), self.conv_s1(stride8)

    def image_feature_shapes(self, grid: Tuple[int, int]) -> Tuple[Tuple[int, ...], ...]:
        dim = self.transformer_dim
        return (dim // 8, 4 * grid[0], 4 * grid[1]), (dim // 4, 2 * grid[0], 2 * grid[1])

    def output_tokens(self) -> torch.Tensor:
        """(6, C): the object-score token, the IoU token, the 4 mask tokens."""
        return torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], dim=0)

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
        return_object_scores: bool = False,
    ) -> Tuple[torch.Tensor, ...]:
        """As `MaskDecoder.forward`, high_res_features = `image_features(...)`; with
        `return_object_scores` also the object-score logits (B, 1) (> 0: the object is there)."""
        dynamic = not multimask_output and self.dynamic_multimask_via_stability and not self.training
        selected = slice(1, None) if multimask_output else slice(None) if dynamic else slice(0, 1)
        hs, keys = self._transformer(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                                     image_side)
        masks, iou_pred = self._heads(hs, keys, image_pe.shape[-2:], selected, None if dynamic else iou_threshold,
                                      high_res_features)
        if dynamic:
            masks, iou_pred = self.single_mask_output(masks, iou_pred)
        if return_object_scores:
            return masks, iou_pred, self.pred_obj_score_head(hs[:, 0, :])
        return masks, iou_pred

    def single_mask_output(self, masks: torch.Tensor, iou_pred: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """All 4 masks (B, 4, h, w) and IoUs (B, 4) -> the single-mask output, or (with
        `dynamic_multimask_via_stability`) where its stability is below `stability_thresh` the
        multimask output with the best predicted IoU."""
        if not self.dynamic_multimask_via_stability:
            return super().single_mask_output(masks, iou_pred)
        rows = torch.arange(len(masks), device=masks.device)
        best = iou_pred[:, 1:].argmax(dim=1) + 1
        single = masks[:, 0].flatten(1)
        inner = (single > self.stability_delta).sum(dim=1).float()
        outer = (single > -self.stability_delta).sum(dim=1).float()
        stable = torch.where(outer > 0, inner / outer, 1.0) >= self.stability_thresh
        chosen = torch.where(stable, 0, best)
        return masks[rows, chosen][:, None], iou_pred[rows, chosen][:, None]
