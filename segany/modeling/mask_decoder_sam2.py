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
    leading_tokens = 1

    def __init__(self, *, stability_delta: float = 0.05, stability_thresh: float = 0.98,
                 dynamic_multimask_via_stability: bool = True, **kwargs) -> None:
        """stability_delta, stability_thresh: the single-mask fallback (module docstring);
        dynamic_multimask_via_stability: whether it is on. The rest as `MaskDecoder`."""
        dim = kwargs["transformer_dim"]
        super().__init__(high_res_channels=(dim, dim), **kwargs)
        self.obj_score_token = nn.Embedding(1, dim)
        self.pred_obj_score_head = MLP(dim, dim, 1, 3)
        self.iou_prediction_head.sigmoid_output = True
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.stability_delta = stability_delta
        self.stability_thresh = stability_thresh

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
