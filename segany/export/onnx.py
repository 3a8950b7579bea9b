"""ONNX export: the prompt encoder and mask decoder with the interface of the official SAM web
demo (so its clients run our models unchanged), the image encoder, and int8 dynamic quantisation
of either.

Decoder inputs (batch 1, N prompt points, N dynamic):
    image_embeddings [1, C, h, w] f32 (C = 256, h = w = 64 for SAM), point_coords [1, N, 2] f32
    in the resized frame (longest side = image size; for SAM 2 the image resized to the square),
    point_labels [1, N] f32 (1 foreground, 0 background, 2 / 3 box corners, -1 padding; in the
    order of `prompt_layout`, which `graph_prompts` follows), mask_input [1, 1, 4h, 4w] f32, has_mask_input [1] f32, orig_im_size [2] f32 (H, W).
Decoders that take more image inputs (`MaskDecoder.image_feature_names`) have them after
these, as the encoder graph outputs them: SAM-HQ's hq_features [1, C/8, 4h, 4w], SAM 2's
high_res_feats_0 [1, C/8, 4h, 4w] and high_res_feats_1 [1, C/4, 2h, 2w].
Decoder outputs: masks [1, M, H, W] logits at the original size, iou_predictions [1, M] (or
stability scores), low_res_masks [1, M, 4h, 4w]; M = 4 (what the predictor returns without
multimask output first, then the 3 multimask outputs) or 1 with `single_mask`. For SAM-HQ each
is SAM's mask plus the HQ token's, as its predictor answers (with `hq_token_only`, every one is
the HQ token's mask alone, beside SAM's predicted IoU of its slot); for SAM 2 the first is its
single-mask output after the stability fallback. With `full_size=False` the graph has no
`masks` output (its upscaling is most of the decoder's time): the annotation page upscales
the one candidate it shows.
"""

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SegAnyError
from ..extras import require
from ..fileio import atomic_path
from ..modeling import Sam

DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")
OPSET = 17


def prompt_layout(model: Sam) -> str:
    """The order of the decoder graph's prompt points: "sam", the official web demo's (the
    points, then the box's two corners, or one padding point when there is no box), or "sam2",
    as SAM 2's predictor builds it (the box's corners, the points, then always one padding point)."""
    return "sam2" if model.config.decoder == "sam2" else "sam"


def graph_prompts(layout: str, point_coords: Optional[np.ndarray], point_labels: Optional[np.ndarray],
                  box: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Points (N, 2) with labels (N,) and a box (4,) x0 y0 x1 y1, in the graph's frame, -> its
    point_coords (1, M, 2) and point_labels (1, M) float32, laid out as `prompt_layout` says."""
    coords = [np.asarray(point_coords, np.float32).reshape(-1, 2)] if point_coords is not None else []
    labels = [np.asarray(point_labels, np.float32).reshape(-1)] if point_labels is not None else []
    padding = (np.zeros((1, 2), np.float32), np.array([-1], np.float32))
    corners = (np.asarray(box, np.float32).reshape(2, 2), np.array([2, 3], np.float32)) if box is not None else None
    if layout == "sam2":
        parts = ([corners] if corners else []) + [(c, l) for c, l in zip(coords, labels)] + [padding]
    else:
        parts = [(c, l) for c, l in zip(coords, labels)] + [corners or padding]
    return np.concatenate([c for c, _ in parts])[None], np.concatenate([l for _, l in parts])[None]


class OnnxDecoder(nn.Module):
    """The prompt encoder and mask decoder of `model` as one graph over the web demo's inputs."""

    def __init__(self, model: Sam, single_mask: bool = False, stability_score: bool = False,
                 stability_score_offset: float = 1.0, full_size: bool = True, hq_token_only: bool = False) -> None:
        super().__init__()
        self.model = model
        self.decoder_options = model.decoder_options(hq_token_only)
        self.full_size = full_size
        self.single_mask = single_mask
        self.stability_score = stability_score
        self.stability_score_offset = stability_score_offset

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
                mask_input: torch.Tensor, has_mask_input: torch.Tensor, orig_im_size: torch.Tensor,
                *image_features: torch.Tensor):
        prompts, decoder = self.model.prompt_encoder, self.model.mask_decoder
        sparse = self._embed_points(point_coords, point_labels)  # 1, N, C
        dense = has_mask_input * prompts.mask_downscaling(mask_input)
        dense = dense + (1 - has_mask_input) * prompts.no_mask_embed.weight.reshape(1, -1, 1, 1)  # 1, C, h, w
        low_res, scores = decoder.predict_masks(image_embeddings, prompts.get_dense_pe(), sparse, dense,
                                                high_res_features=image_features,
                                                **self.decoder_options)  # 1, 4, 4h, 4w and 1, 4
        single, single_score = decoder.single_mask_output(low_res, scores)
        low_res, scores = torch.cat([single, low_res[:, 1:]], dim=1), torch.cat([single_score, scores[:, 1:]], dim=1)
        if self.stability_score:
            threshold, offset = self.model.mask_threshold, self.stability_score_offset
            inner = (low_res > threshold + offset).sum(dim=(-1, -2), dtype=torch.float32)
            outer = (low_res > threshold - offset).sum(dim=(-1, -2), dtype=torch.float32)
            scores = inner / outer
        if self.single_mask:
            low_res, scores = self._select(low_res, scores, point_coords.shape[1])
        if not self.full_size:
            return scores, low_res
        return self._to_original_size(low_res, orig_im_size), scores, low_res

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(1, N, 2) points, (1, N) labels (-1 padding, 0 / 1 background / foreground, 2 / 3 box
        corners) -> (1, N, C) tokens, as the prompt encoder makes them."""
        prompts = self.model.prompt_encoder
        encoding = prompts.pe_layer._pe_encoding((coords + 0.5) / self.model.image_size)
        labels = labels.unsqueeze(-1)
        tokens = encoding * (labels != -1) + prompts.not_a_point_embed.weight * (labels == -1)
        for kind, embedding in enumerate(prompts.point_embeddings):
            tokens = tokens + embedding.weight * (labels == kind)
        return tokens

    @staticmethod
    def _select(masks: torch.Tensor, scores: torch.Tensor, points: int):
        """The best-scored of the 3 multimask outputs for 1 or 2 points (a point, or a point and
        its padding), the single-mask output for more (the predictor's choice)."""
        weights = torch.tensor([[1000.0] + [0.0] * (scores.shape[1] - 1)])
        best = torch.argmax(scores + (points - 2.5) * weights, dim=1)
        return masks[:, best], scores[:, best]

    def _to_original_size(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """Low-res logits -> logits at orig_im_size (H, W), through the padded input frame (or
        directly for models that resize images to a square, as `Sam.postprocess_masks`)."""
        original = orig_im_size.to(torch.int64)
        if self.model.resize == "square":
            return F.interpolate(masks, size=(original[0], original[1]), mode="bilinear", align_corners=False)
        size = self.model.image_size
        masks = F.interpolate(masks, (size, size), mode="bilinear", align_corners=False)
        resized = torch.floor(orig_im_size * (size / orig_im_size.max()) + 0.5).to(torch.int64)
        # index_select with arange keeps the crop dynamic in the graph (slicing would fix it).
        masks = masks.index_select(2, torch.arange(resized[0])).index_select(3, torch.arange(resized[1]))
        return F.interpolate(masks, size=(original[0], original[1]), mode="bilinear", align_corners=False)


def export_decoder(model: Sam, path: Union[str, Path], single_mask: bool = False, stability_score: bool = False,
                   quantize: bool = False, full_size: bool = True, hq_token_only: bool = False) -> Path:
    """Write the decoder graph (see the module docstring) to `path`; with `quantize`, int8
    dynamic quantisation of its weights; `hq_token_only` for SAM-HQ's option. Returns the path."""
    # eval() on the wrapper too: the exporter restores the wrapper's mode on every submodule.
    wrapper = OnnxDecoder(model.float(), single_mask, stability_score, full_size=full_size,
                          hq_token_only=hq_token_only).eval()
    c, grid = model.prompt_encoder.embed_dim, model.prompt_encoder.image_embedding_size
    h, w = grid
    features = tuple(torch.randn(1, *shape) for shape in model.mask_decoder.image_feature_shapes(grid))
    example = (torch.randn(1, c, h, w), torch.randint(0, model.image_size, (1, 3, 2)).float(),
               torch.tensor([[1.0, 0.0, -1.0]]), torch.randn(1, 1, 4 * h, 4 * w), torch.tensor([1.0]),
               torch.tensor([float(model.image_size) * 0.75, float(model.image_size)]), *features)
    dynamic = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
    outputs = DECODER_OUTPUTS if full_size else DECODER_OUTPUTS[1:]
    inputs = (*DECODER_INPUTS, *model.mask_decoder.image_feature_names)
    return _export(wrapper, example, inputs, outputs, dynamic, path, quantize)


class OnnxEncoder(nn.Module):
    """The image encoder with the decoder's other image inputs (`Sam.encode_image`) as outputs."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        embedding, high_res = self.model.encode_image(image)
        return (embedding, *high_res)


def export_encoder(model: Sam, path: Union[str, Path], quantize: bool = False) -> Path:
    """Write the image encoder graph: input "image" [1, 3, S, S] (resized, normalised, padded as
    `Sam.preprocess` makes it), output "image_embeddings" and the decoder's other image inputs
    (module docstring; `SamPredictor.get_high_res_features`)."""
    example = (torch.randn(1, 3, model.image_size, model.image_size),)
    outputs = ("image_embeddings", *model.mask_decoder.image_feature_names)
    return _export(OnnxEncoder(model.float()).eval(), example, ("image",), outputs, {}, path, quantize)


def _export(module: nn.Module, example: tuple, inputs, outputs, dynamic: dict, path: Union[str, Path],
            quantize: bool) -> Path:
    """torch.onnx export (TorchScript tracing: the graph keeps the dynamic prompt count and image
    size), then optional int8 weight quantisation, written atomically."""
    path = Path(path)
    if path.suffix != ".onnx":
        raise SegAnyError(f"{path}: the output must be an .onnx file")
    require("onnx", "ONNX export")
    with atomic_path(path) as tmp, torch.no_grad(), _quiet_export():
        traced = tmp.with_name(tmp.name + ".float") if quantize else tmp
        torch.onnx.export(module, example, str(traced), input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
        try:
            if quantize:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(str(traced), str(tmp), weight_type=QuantType.QUInt8)
        finally:
            if traced != tmp:
                traced.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Without the tracer's warnings about Python values in the graph (those left are the
    model's fixed sizes) and ONNX Runtime's advice to run its shape pre-processing before
    quantising (it fails on these graphs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)
