"""Mask decoder: image embedding + prompt tokens -> mask logits and predicted IoU."""

from typing import NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .common import MLP, LayerNorm2d
from .transformer import ImageSide, TwoWayTransformer


# The names of the high-resolution features (`MaskDecoder.image_features`), as SAM 2 names them.
HIGH_RES_FEATURE_NAMES = ("high_res_feats_0", "high_res_feats_1")


class CellFeatures(NamedTuple):
    """SAM 2-style high-resolution features laid out as the upscaling adds them, one row per
    embedding cell (`cell_features`)."""

    stride4: torch.Tensor  # B, H*W, 4, 4 * C/8: positions (dy, dx), then (ey, ex, channel)
    stride8: torch.Tensor  # B, H*W, 4, C/4: positions (dy, dx)


class MaskDecoder(nn.Module):
    # Whether `image_features` needs the encoder's early features (SAM-HQ).
    uses_early_features = False
    # Names of what `image_features` returns (the ONNX encoder's outputs beside the embedding).
    image_feature_names: Tuple[str, ...] = ()
    # Output tokens before the IoU token (SAM 2's object-score token).
    leading_tokens = 0

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        high_res_channels: Tuple[int, ...] = (),
    ) -> None:
        """
        Args:
            transformer_dim: channel width of the tokens and the image embedding.
            transformer: the two-way transformer.
            num_multimask_outputs: masks predicted for ambiguous prompts (3 in SAM); one more
                output token predicts the single mask used for unambiguous prompts.
            iou_head_depth, iou_head_hidden_dim: the MLP that predicts each mask's IoU.
            high_res_channels: channels of the encoder's stride-4 and stride-8 features, to add
                them into the upscaling as SAM 2 does (projected by `conv_s0` and `conv_s1`,
                once per image: `image_features`); () for SAM's decoder.
        """
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)
        if high_res_channels:
            self.conv_s0 = nn.Conv2d(high_res_channels[0], transformer_dim // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(high_res_channels[1], transformer_dim // 4, kernel_size=1)
            for conv in (self.conv_s0, self.conv_s1):  # start as SAM's decoder (e.g. grown from one)
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)
            self.uses_early_features = True
            self.image_feature_names = HIGH_RES_FEATURE_NAMES

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
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Predict masks for B prompts on one image.

        Args:
            image_embeddings: (1, C, H, W) embedding of the image (or (B, C, H, W), one per prompt).
            image_pe: (1, C, H, W) positional encoding of the embedding grid.
            sparse_prompt_embeddings: (B, N, C) point and box tokens.
            dense_prompt_embeddings: (B, C, H, W) mask-prompt embedding.
            multimask_output: return the 3 ambiguity-aware masks instead of the single one.
            image_side: `prepare_image(...)` of this image and dense embedding, reused across calls.
            iou_threshold: skip the masks of prompts whose returned masks all have a predicted
                IoU <= this; their logits are NaN (for callers that filter by predicted IoU).
            high_res_features: `image_features(...)` of this image (none for SAM's decoder).
        Returns:
            mask logits (B, 3 or 1, 4H, 4W) and predicted IoU (B, 3 or 1).
        """
        selected = slice(1, None) if multimask_output else slice(0, 1)
        return self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, image_side, selected,
            iou_threshold, high_res_features,
        )

    def image_features(self, image_embeddings: torch.Tensor,
                       early_features: Optional[Tuple[torch.Tensor, ...]] = None) -> Tuple[torch.Tensor, ...]:
        """The image-level inputs this decoder takes beside the embedding, computed once per image
        from the embedding and (if `uses_early_features`) the encoder's early features: with
        `high_res_channels`, the projected stride-4 (B, C/8, 4H, 4W) and stride-8 (B, C/4, 2H, 2W)
        features from the encoder's (B, c0, 4H, 4W) and (B, c1, 2H, 2W); else none."""
        if not self.image_feature_names:
            return ()
        if early_features is None:
            raise ValueError("this decoder needs the encoder's high-resolution features")
        stride4, stride8 = early_features
        return self.conv_s0(stride4), self.conv_s1(stride8)

    def per_prompt_features(self, high_res_features: Tuple[torch.Tensor, ...], grid: Tuple[int, int],
                            image_index: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """`image_features` of B images -> a copy for each of N prompts, prompt i on image
        image_index[i] (N,), for decoding them as one batch. SAM 2-style features come laid out
        as the upscaling reads them (`CellFeatures`): training decodes every prompt in several
        rounds, and laying out B images once costs far less than N copies every round."""
        if self.image_feature_names == HIGH_RES_FEATURE_NAMES:
            return CellFeatures(*(f.index_select(0, image_index) for f in cell_features(high_res_features, *grid)))
        return tuple(features.index_select(0, image_index) for features in high_res_features)

    def image_feature_shapes(self, grid: Tuple[int, int]) -> Tuple[Tuple[int, ...], ...]:
        """Shapes of `image_features` for one image whose embedding grid is `grid` (H, W)."""
        if not self.image_feature_names:
            return ()
        dim = self.transformer_dim
        return (dim // 8, 4 * grid[0], 4 * grid[1]), (dim // 4, 2 * grid[0], 2 * grid[1])

    def prepare_image(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense_prompt_embeddings: torch.Tensor
    ) -> ImageSide:
        """The decoder's work that depends on the image and dense embedding only, not on the prompts."""
        # Without mask prompts the dense embedding is one vector broadcast to every prompt: keep
        # the image side at batch 1 so the transformer does its prompt-independent work once.
        if dense_prompt_embeddings.shape[0] > 1 and dense_prompt_embeddings.stride(0) == 0:
            dense_prompt_embeddings = dense_prompt_embeddings[:1]
        return self.transformer.prepare_image(image_embeddings + dense_prompt_embeddings, image_pe)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        image_side: Optional[ImageSide] = None,
        selected: slice = slice(None),
        iou_threshold: Optional[float] = None,
        high_res_features: Tuple[torch.Tensor, ...] = (),
        **mask_options: bool,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Masks (B, M, 4H, 4W) and predicted IoU (B, M) of the `selected` of the 4 mask tokens.

        iou_threshold: as in `forward`; the predicted IoU comes before the masks, so masks that
        would be thrown away are never upscaled. mask_options: options of the family's masks
        (`Sam.decoder_options`: SAM-HQ's hq_token_only).
        """
        hs, keys = self._transformer(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                                     image_side)
        return self._heads(hs, keys, image_pe.shape[-2:], selected, iou_threshold, high_res_features, **mask_options)

    def _heads(self, hs: torch.Tensor, keys: torch.Tensor, grid: Tuple[int, int], selected: slice,
               iou_threshold: Optional[float], high_res_features: Tuple[torch.Tensor, ...], **mask_options: bool
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        """`predict_masks` from the transformer's outputs."""
        bs = hs.shape[0]
        h, w = grid
        first = self.leading_tokens
        iou_pred = self.iou_prediction_head(hs[:, first, :])[:, selected]
        token_ids = range(self.num_mask_tokens)[selected]
        hyper_in = torch.stack(
            [self.output_hypernetworks_mlps[i](hs[:, first + 1 + i, :]) for i in token_ids], dim=1
        )  # B, M, C/8
        if iou_threshold is not None:
            wanted = (iou_pred > iou_threshold).any(dim=1)
            masks = hyper_in.new_full((bs, len(token_ids), 4 * h, 4 * w), float("nan"))
            masks[wanted] = self._masks(hs[wanted], hyper_in[wanted], keys[wanted], h, w, high_res_features,
                                        **mask_options)
            return masks, iou_pred
        return self._masks(hs, hyper_in, keys, h, w, high_res_features, **mask_options), iou_pred

    def single_mask_output(self, masks: torch.Tensor, iou_pred: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """From all 4 outputs, masks (B, 4, h, w) and IoU (B, 4), the one `forward` returns without
        multimask output: (B, 1, h, w) and (B, 1); SAM's is the single-mask token's."""
        return masks[:, :1], iou_pred[:, :1]

    def output_tokens(self) -> torch.Tensor:
        """(T, C): the IoU token, then the mask tokens."""
        return torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)

    def _transformer(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        image_side: Optional[ImageSide],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The two-way transformer over output + prompt tokens: token outputs (B, T + N, C) and
        image keys (B, H*W, C)."""
        bs = sparse_prompt_embeddings.shape[0]
        output_tokens = self.output_tokens()
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(bs, -1, -1), sparse_prompt_embeddings], dim=1)
        if image_side is None:
            image_side = self.prepare_image(image_embeddings, image_pe, dense_prompt_embeddings)
        hs, keys = self.transformer(None, None, tokens, image_side=image_side)
        return hs, keys.expand(bs, -1, -1)

    def _masks(self, hs: torch.Tensor, hyper_in: torch.Tensor, keys: torch.Tensor, h: int, w: int,
               high_res_features: Tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
        """Hypernetwork outputs (B, M, C/8) and image keys (B, H*W, C) -> masks (B, M, 4H, 4W);
        hs, the transformer's token outputs (B, T, C), for decoders with more output tokens."""
        return upscaled_to_image(hyper_in @ self._upscale(keys, h, w, high_res_features).transpose(1, 2), h, w)

    def _upscale(self, keys: torch.Tensor, h: int, w: int,
                 high_res_features: Tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
        """`output_upscaling` applied to token-major features: (B, H*W, C) -> (B, H*W*16, C/8).

        A 2x2 stride-2 transposed convolution maps each input pixel to its own 2x2 output
        pixels, so it is a Linear to 4 x out channels; working per pixel keeps channels last,
        where LayerNorm2d is an ordinary layer norm, and avoids (B, C, 4H, 4W) copies.
        high_res_features: the projected stride-4 (B, C/8, 4H, 4W) and stride-8 (B, C/4, 2H, 2W)
        features (or their `CellFeatures`), added after each transposed convolution (before its
        norm or activation).
        """
        up1, norm, act1, up2, act2 = self.output_upscaling
        x = F.linear(keys, _conv_transpose_as_linear(up1.weight), up1.bias.repeat(4))  # B, HW, 4 * C/4
        x = x.unflatten(-1, (4, -1))  # B, HW, (dy, dx), C/4
        if high_res_features:
            stride4, stride8 = cell_features(high_res_features, h, w)
            x = x + stride8
        x = act1(F.layer_norm(x, norm.weight.shape, norm.weight, norm.bias, norm.eps))
        x = F.linear(x, _conv_transpose_as_linear(up2.weight), up2.bias.repeat(4))  # B, HW, 4, 4 * C/8
        if high_res_features:
            x = x + stride4
        x = act2(x)
        return x.reshape(x.shape[0], h * w * 16, x.shape[-1] // 4)


def upscaled_to_image(values: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, M, H*W*16) values at `_upscale`'s positions -> (B, M, 4H, 4W) images.

    Positions are ordered (y, x, dy, dx, ey, ex) for output row 4y+2dy+ey, column 4x+2dx+ex.
    """
    bs, count = values.shape[:2]
    values = values.view(bs, count, h, w, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
    return values.reshape(bs, count, 4 * h, 4 * w)


def cell_features(high_res_features: Sequence[torch.Tensor], h: int, w: int) -> CellFeatures:
    """SAM 2-style stride-4 (B, C/8, 4H, 4W) and stride-8 (B, C/4, 2H, 2W) features of an H x W
    embedding -> their `CellFeatures` (as they are if they are already)."""
    if isinstance(high_res_features, CellFeatures):
        return high_res_features
    stride4, stride8 = high_res_features
    return CellFeatures(_per_cell(stride4, h, w, levels=2), _per_cell(stride8, h, w, levels=1))


def _per_cell(features: torch.Tensor, h: int, w: int, levels: int) -> torch.Tensor:
    """An image-shaped (B, C, 2^levels H, 2^levels W) tensor in `_upscale`'s layout: one row per
    embedding cell, (B, H*W, 4, C) for levels 1 (positions dy, dx) and (B, H*W, 4, 4 * C) for
    levels 2 (dy, dx, then ey, ex and the channel)."""
    b, c = features.shape[:2]
    if levels == 1:  # rows 2y+dy, columns 2x+dx
        x = features.view(b, c, h, 2, w, 2).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, h * w, 4, c)
    # rows 4y+2dy+ey, columns 4x+2dx+ex
    x = features.view(b, c, h, 2, 2, w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1)
    return x.reshape(b, h * w, 4, 4 * c)


def _conv_transpose_as_linear(weight: torch.Tensor) -> torch.Tensor:
    """ConvTranspose2d weight (in, out, 2, 2) -> Linear weight (4 * out, in), rows ordered (dy, dx, out)."""
    return weight.permute(2, 3, 1, 0).reshape(-1, weight.shape[0])
