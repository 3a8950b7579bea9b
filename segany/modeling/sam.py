"""The Segment Anything model: image encoder + prompt encoder + mask decoder."""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import SegAnyError
from .mask_decoder import MaskDecoder
from .mask_decoder_hq import MaskDecoderHQ
from .mask_decoder_sam2 import MaskDecoderSAM2
from .prompt_encoder import PromptEncoder

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    mask_threshold: float = 0.0
    image_format: str = "RGB"
    config: Any = None  # the SamConfig this model was built from (set by build_sam)
    resize: str = "longest_side"  # SamConfig.resize: "square" for SAM 2

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Sequence[float] = PIXEL_MEAN,
        pixel_std: Sequence[float] = PIXEL_STD,
    ) -> None:
        """image_encoder: one of `config.ENCODERS` (its `img_size` is the padded input side);
        pixel_mean, pixel_std: per-channel RGB normalisation in 0-255 units."""
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        # Not persistent: official checkpoints do not store them.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def image_size(self) -> int:
        return self.image_encoder.img_size

    def run_image_encoder(self, pixels: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """`preprocess`ed pixels (B, 3, S, S) -> the image embedding (B, C, g, g) and the encoder's
        early features if the decoder uses them (SAM-HQ), else None."""
        if self.mask_decoder.uses_early_features:
            return self.image_encoder.forward_with_early(pixels)
        return self.image_encoder(pixels), None

    def encode_image(self, pixels: torch.Tensor) -> Tuple[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """`preprocess`ed pixels (B, 3, S, S) -> the image embedding (B, C, g, g) and the decoder's
        other image-level inputs (`MaskDecoder.image_features`: none for SAM's decoder, SAM-HQ's
        fused early features (B, C/8, 4g, 4g))."""
        embedding, early = self.run_image_encoder(pixels)
        return embedding, self.mask_decoder.image_features(embedding, early)

    def high_res_feature_shapes(self) -> Tuple[Tuple[int, ...], ...]:
        """Shapes (without the batch axis) of what `encode_image` returns beside the embedding."""
        return self.mask_decoder.image_feature_shapes(self.prompt_encoder.image_embedding_size)

    def decoder_options(self, hq_token_only: bool = False, return_object_scores: bool = False) -> Dict[str, Any]:
        """Keyword arguments of the mask decoder for the options of its family: SAM-HQ's
        `hq_token_only`, SAM 2's `return_object_scores` (the decoder then also returns them)."""
        options: Dict[str, Any] = {}
        if hq_token_only:
            if not isinstance(self.mask_decoder, MaskDecoderHQ):
                raise SegAnyError("hq_token_only is an option of SAM-HQ models; this model's decoder is not SAM-HQ's")
            options["hq_token_only"] = True
        if return_object_scores:
            if not isinstance(self.mask_decoder, MaskDecoderSAM2):
                raise SegAnyError("object scores come from SAM 2 models; this model's decoder is not SAM 2's")
            options["return_object_scores"] = True
        return options

    @torch.no_grad()
    def forward(self, batched_input: List[Dict[str, Any]], multimask_output: bool,
                hq_token_only: bool = False) -> List[Dict[str, torch.Tensor]]:
        """End-to-end prediction for a batch of images, each with its own prompts.

        Each input dict holds `image` (3, H, W) already resized so the long side is
        `image_size`, `original_size` (H, W), and optionally `point_coords` (B, N, 2),
        `point_labels` (B, N), `boxes` (B, 4), `mask_inputs` (B, 1, 256, 256), all in the
        resized frame. Each output dict holds `masks` (B, C, H, W) bool at the original size,
        `iou_predictions` (B, C) and `low_res_logits` (B, C, 256, 256). hq_token_only: SAM-HQ's
        option (`MaskDecoderHQ.forward`).
        """
        options = self.decoder_options(hq_token_only)
        images = torch.stack([self.preprocess(record["image"]) for record in batched_input], dim=0)
        embeddings, high_res = self.encode_image(images)
        outputs = []
        for index, (record, embedding) in enumerate(zip(batched_input, embeddings)):
            points = (record["point_coords"], record["point_labels"]) if "point_coords" in record else None
            sparse, dense = self.prompt_encoder(points, record.get("boxes"), record.get("mask_inputs"))
            low_res, iou = self.mask_decoder(
                image_embeddings=embedding.unsqueeze(0),
                image_pe=self.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
                high_res_features=tuple(features[index : index + 1] for features in high_res),
                **options,
            )
            masks = self.postprocess_masks(low_res, record["image"].shape[-2:], record["original_size"])
            outputs.append(
                {"masks": masks > self.mask_threshold, "iou_predictions": iou, "low_res_logits": low_res}
            )
        return outputs

    def postprocess_masks(
        self, masks: torch.Tensor, input_size: Tuple[int, ...], original_size: Tuple[int, ...]
    ) -> torch.Tensor:
        """Low-res logits (B, C, 256, 256) -> logits (B, C, H, W) at the original image size.

        input_size: (h, w) of the resized image before padding; original_size: (H, W). SAM 2's
        models (`resize` "square") resize the logits to the original size directly, as SAM 2 does.
        """
        if self.resize == "square":
            return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)
        # Resizing to image_size and cropping to input_size gives, bit for bit, the first rows and
        # columns of a resize of just the low-res cells they read (the scale factor is the same
        # and no clamped border cell is reached): skip the padding's cells.
        scale = self.image_size // masks.shape[-1]
        cells = [min(n, -(-size // scale) + 1) for n, size in zip(masks.shape[-2:], input_size)]
        masks = masks[..., : cells[0], : cells[1]]
        masks = F.interpolate(masks, (cells[0] * scale, cells[1] * scale), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]].contiguous()  # faster to resize
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Resized RGB (..., 3, h, w) in 0-255 -> normalised and zero-padded to image_size."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.image_size - w, 0, self.image_size - h))
