"""SamPredictor: embed an image once, then predict masks for many prompts in milliseconds.

Same methods, signatures, shapes and coordinate conventions as `segment_anything.SamPredictor`
(x, y in original image pixels), plus `predict_batch` for many prompts in one call and
`set_embedding` to reuse an embedding computed elsewhere.
"""

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .allocator import tune_allocator
from .errors import SegAnyError
from .modeling import Sam
from .modeling.transformer import ImageSide
from .transforms import ImageLike, resize_for, to_rgb_uint8

Prediction = Tuple[np.ndarray, np.ndarray, np.ndarray]
PROMPTS_PER_DECODER_CALL = 4
# Point labels of the prompt encoder: -1 padding, 0 background, 1 foreground, 2 and 3 box corners.
POINT_LABELS = (-1, 0, 1, 2, 3)


def _as_batch_of_one(array: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
    """A tensor of an image's features with the leading batch axis of 1 added if missing."""
    tensor = array if torch.is_tensor(array) else torch.as_tensor(np.asarray(array))
    return tensor if tensor.ndim == 4 else tensor[None]


def _check_shape(name: str, array: np.ndarray, expected: Tuple[Optional[int], ...], shape_text: str) -> None:
    if array.ndim != len(expected) or any(e is not None and e != s for e, s in zip(expected, array.shape)):
        raise SegAnyError(f"{name} must have shape {shape_text}, got {tuple(array.shape)}")


def _check_prompts(point_coords: Optional[torch.Tensor], point_labels: Optional[torch.Tensor],
                   boxes: Optional[torch.Tensor], mask_input: Optional[torch.Tensor]) -> None:
    """Raise SegAnyError for NaN or infinite prompts and for point labels the prompt encoder does not know."""
    for name, tensor in (("point_coords", point_coords), ("boxes", boxes), ("mask_input", mask_input)):
        if tensor is not None and not torch.isfinite(tensor).all():
            raise SegAnyError(f"{name} holds NaN or infinite values")
    if point_coords is not None and point_labels is None:
        raise SegAnyError("point_labels must be supplied if point_coords is supplied.")
    if point_labels is not None:
        known = torch.tensor(POINT_LABELS, device=point_labels.device)
        unknown = point_labels[~torch.isin(point_labels, known)]
        if len(unknown):
            raise SegAnyError(f"point_labels must be 1 (foreground), 0 (background) or -1 (padding); "
                              f"got {unknown[0].item():g}")


class SamPredictor:
    def __init__(self, sam_model: Sam, dtype: torch.dtype = torch.float32,
                 decoder_dtype: torch.dtype = torch.float32) -> None:
        """
        Args:
            sam_model: the model; its weights stay as they are.
            dtype: precision of the image encoder. torch.float32 computes exactly what the
                official predictor computes; torch.bfloat16 runs its matrix products in
                bfloat16 (autocast): 1.7x (vit_b) to 2.5x (vit_h) faster on CPUs with AVX-512
                bf16 / AMX, embedding within about 1% (relative), masks within 0.999 mean IoU
                of float32.
            decoder_dtype: precision of the prompt encoder and mask decoder; torch.bfloat16
                makes batched prompts about 1.6x faster but moves masks further (about 0.98
                mean IoU against float32), so float32 is the default whatever `dtype` is.
                (Figures: benchmarks/RESULTS.md.)

        Creating a predictor calls `segany.allocator.tune_allocator()` (process-wide; set
        SEGANY_TUNE_MALLOC=0 to opt out).
        """
        for name, value in (("dtype", dtype), ("decoder_dtype", decoder_dtype)):
            if value not in (torch.float32, torch.bfloat16):
                raise SegAnyError(f"{name} must be torch.float32 or torch.bfloat16, got {value}")
        tune_allocator()
        self.model = sam_model
        self.dtype = dtype
        self.decoder_dtype = decoder_dtype
        self.transform = resize_for(sam_model)
        self.reset_image()

    def _precision(self, dtype: torch.dtype) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self.is_image_set = False
        self.features: Optional[torch.Tensor] = None
        self.high_res_features: Tuple[torch.Tensor, ...] = ()
        # Per image, made on first use: the grid's positional encoding and the decoder's
        # prompt-independent work.
        self._image_pe: Optional[torch.Tensor] = None
        self._image_side: Optional[ImageSide] = None
        self.original_size: Optional[Tuple[int, int]] = None
        self.input_size: Optional[Tuple[int, int]] = None

    def set_image(self, image: ImageLike, image_format: str = "RGB") -> None:
        """Compute the embedding of an image for the following `predict` calls.

        image: (H, W, 3) uint8 in `image_format` ('RGB' or 'BGR'); grayscale, RGBA, 16-bit,
        bool and float images are converted as `segany.transforms.to_rgb_uint8` documents.
        """
        image = to_rgb_uint8(image, image_format)
        resized = self.transform.apply_image(image)
        tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        self.set_torch_image(tensor, image.shape[:2])

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: Tuple[int, ...]) -> None:
        """Like `set_image` for an image already resized by `ResizeLongestSide`.

        transformed_image: (1, 3, h, w) with max(h, w) == model image size, values 0-255.
        original_image_size: (H, W) before resizing.
        """
        size = self.model.image_encoder.img_size
        if transformed_image.ndim != 4 or transformed_image.shape[1] != 3 or max(transformed_image.shape[2:]) != size:
            raise SegAnyError(
                f"set_torch_image input must be (B, 3, h, w) with long side {size}, "
                f"got {tuple(transformed_image.shape)}"
            )
        self.reset_image()
        with self._precision(self.dtype):
            features, high_res = self.model.encode_image(self.model.preprocess(transformed_image.to(self.device)))
        self._set_features(features.float(), tuple(f.float() for f in high_res), tuple(original_image_size),
                           tuple(transformed_image.shape[-2:]))

    def set_embedding(
        self,
        embedding: Union[np.ndarray, torch.Tensor],
        original_image_size: Tuple[int, int],
        high_res_features: Sequence[Union[np.ndarray, torch.Tensor]] = (),
    ) -> None:
        """Use an embedding from `get_image_embedding()` (e.g. saved as .npy) instead of `set_image`.

        embedding: (1, C, g, g) or (C, g, g); original_image_size: (H, W) of the image it came from;
        high_res_features: `get_high_res_features()` of that image, for models whose decoder
        takes them (SAM-HQ), each (1, ...) or without the leading 1.
        """
        features = _as_batch_of_one(embedding)
        c = self.model.prompt_encoder.embed_dim
        g = self.model.prompt_encoder.image_embedding_size
        if tuple(features.shape) != (1, c, *g):
            raise SegAnyError(f"embedding must have shape (1, {c}, {g[0]}, {g[1]}), got {tuple(features.shape)}")
        expected = self.model.high_res_feature_shapes()
        high_res = tuple(_as_batch_of_one(f) for f in high_res_features)
        if tuple(tuple(f.shape[1:]) for f in high_res) != expected:
            raise SegAnyError(f"high_res_features must be {len(expected)} arrays of shapes "
                              f"{[(1, *shape) for shape in expected]} for this model, got "
                              f"{[tuple(f.shape) for f in high_res]}")
        h, w = (int(v) for v in original_image_size)
        if h <= 0 or w <= 0:
            raise SegAnyError(f"original_image_size must be positive (H, W), got {original_image_size}")
        self.reset_image()
        input_size = self.transform.get_preprocess_shape(h, w, self.model.image_encoder.img_size)
        self._set_features(features.to(self.device, torch.float),
                           tuple(f.to(self.device, torch.float) for f in high_res), (h, w), input_size)

    def _set_features(self, features: torch.Tensor, high_res: Tuple[torch.Tensor, ...],
                      original_size: Tuple[int, ...], input_size: Tuple[int, ...]):
        self.features = features
        self.high_res_features = high_res
        self.original_size = (int(original_size[0]), int(original_size[1]))
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.is_image_set = True

    def get_image_embedding(self) -> torch.Tensor:
        """Embedding of the current image: (1, C, g, g), (1, 256, 64, 64) for SAM."""
        self._require_image()
        return self.features

    def get_high_res_features(self) -> Tuple[torch.Tensor, ...]:
        """The decoder's other inputs for the current image (`Sam.encode_image`): none for SAM's
        decoder, SAM-HQ's fused early features (1, C/8, 4g, 4g), the projected stride-4 and stride-8
        features of SAM 2's and the high_res decoder (1, C/8, 4g, 4g) and (1, C/4, 2g, 2g)."""
        self._require_image()
        return self.high_res_features

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")

    def predict(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        hq_token_only: bool = False,
    ) -> Prediction:
        """Masks for one prompt on the current image.

        Args:
            point_coords: (N, 2) x,y in original image pixels; point_labels: (N,), 1 foreground,
                0 background.
            box: (4,) x0,y0,x1,y1 in original image pixels.
            mask_input: (1, 256, 256) low-res logits from a previous call.
            multimask_output: three masks for an ambiguous prompt, else one (SAM-HQ: the best of
                the three, else the single-mask output, each with the HQ mask added).
            return_logits: return logits instead of boolean masks.
            hq_token_only: SAM-HQ models: the HQ token's mask alone.
        Returns:
            masks (C, H, W) bool (float32 logits with return_logits), predicted IoU (C,),
            low-res logits (C, 256, 256); C is 3 with multimask_output, else 1 (always 1 for
            SAM-HQ).
        """
        points = None if point_coords is None else np.asarray(point_coords)
        labels = None if point_labels is None else np.asarray(point_labels)
        if points is not None:
            _check_shape("point_coords", points, (None, 2), "(N, 2)")
        if box is not None:
            box = np.asarray(box)
            if box.size != 4:
                raise SegAnyError(f"box must have shape (4,), got {box.shape}")
        if mask_input is not None:
            mask_input = np.asarray(mask_input)
            h, w = self.model.prompt_encoder.mask_input_size
            _check_shape("mask_input", mask_input, (1, h, w), f"(1, {h}, {w})")
        masks, scores, low_res = self.predict_batch(
            point_coords=None if points is None else points[None],
            point_labels=None if labels is None else labels[None],
            boxes=None if box is None else box.reshape(1, 4),
            mask_input=None if mask_input is None else mask_input[None],
            multimask_output=multimask_output,
            return_logits=return_logits,
            hq_token_only=hq_token_only,
        )
        return masks[0], scores[0], low_res[0]

    def predict_batch(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        boxes: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        hq_token_only: bool = False,
    ) -> Prediction:
        """Masks for B prompts on the current image in one decoder call.

        Args:
            point_coords: (B, N, 2) in original image pixels; point_labels: (B, N).
            boxes: (B, 4) x0,y0,x1,y1 in original image pixels.
            mask_input: (B, 1, 256, 256) low-res logits.
        Returns:
            masks (B, C, H, W), predicted IoU (B, C), low-res logits (B, C, 256, 256).
        """
        self._require_image()
        coords_torch = labels_torch = boxes_torch = mask_torch = None
        if point_coords is not None:
            if point_labels is None:
                raise SegAnyError("point_labels must be supplied if point_coords is supplied.")
            point_coords, point_labels = np.asarray(point_coords), np.asarray(point_labels)
            _check_shape("point_coords", point_coords, (None, None, 2), "(B, N, 2)")
            _check_shape("point_labels", point_labels, point_coords.shape[:2], f"{point_coords.shape[:2]}")
            whole = np.issubdtype(point_labels.dtype, np.number) and np.array_equal(point_labels, np.round(point_labels))
            if not whole:
                raise SegAnyError(f"point_labels must be whole numbers (1 foreground, 0 background), got "
                                  f"{point_labels.ravel()[:4].tolist()}")
            coords = self.transform.apply_coords(point_coords, self.original_size)
            coords_torch = torch.as_tensor(coords, dtype=torch.float, device=self.device)
            labels_torch = torch.as_tensor(point_labels, dtype=torch.int, device=self.device)
        if boxes is not None:
            boxes = np.asarray(boxes)
            _check_shape("boxes", boxes, (None, 4), "(B, 4)")
            boxes = self.transform.apply_boxes(boxes, self.original_size)
            boxes_torch = torch.as_tensor(boxes, dtype=torch.float, device=self.device)
        if mask_input is not None:
            mask_input = np.asarray(mask_input)
            h, w = self.model.prompt_encoder.mask_input_size
            _check_shape("mask_input", mask_input, (None, 1, h, w), f"(B, 1, {h}, {w})")
            mask_torch = torch.as_tensor(mask_input, dtype=torch.float, device=self.device)
        sizes = {len(t) for t in (coords_torch, boxes_torch, mask_torch) if t is not None}
        if len(sizes) > 1:
            raise SegAnyError(f"points, boxes and mask_input hold different numbers of prompts: {sorted(sizes)}")
        logits, scores, low_res = self.predict_torch(
            coords_torch, labels_torch, boxes_torch, mask_torch, multimask_output, return_logits=True,
            hq_token_only=hq_token_only,
        )
        masks = logits.cpu().numpy()
        if not return_logits:
            masks = masks > self.model.mask_threshold  # numpy writes booleans twice as fast as torch here
        return masks, scores.cpu().numpy(), low_res.cpu().numpy()

    def _decode(
        self,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        multimask_output: bool,
        has_mask_input: bool,
        iou_threshold: Optional[float] = None,
        options: Optional[Dict[str, Any]] = None,
    ) -> Tuple[torch.Tensor, ...]:
        """Mask decoder on the current image: low-res logits (B, C, 256, 256) and IoU (B, C)
        (and what else its `options`, from `Sam.decoder_options`, ask of it).

        On a CPU, runs PROMPTS_PER_DECODER_CALL prompts at a time: per prompt, the decoder's
        image-sized intermediates are 4 MiB each, and a few prompts' worth stay in cache where a
        whole batch would go to memory (64 prompts: 25 -> 20 ms per prompt). Elsewhere the whole
        batch at once: a GPU is kept busy by few large kernels, not many small ones.
        """
        per_call = PROMPTS_PER_DECODER_CALL if self.device.type == "cpu" else max(len(sparse), 1)
        if self._image_pe is None:
            self._image_pe = self.model.prompt_encoder.get_dense_pe()
        image_side = None
        if not has_mask_input:  # then the dense embedding is the same for every prompt
            if self._image_side is None:
                self._image_side = self.model.mask_decoder.prepare_image(self.features, self._image_pe, dense)
            image_side = self._image_side
        outputs = [
            self.model.mask_decoder(
                image_embeddings=self.features,
                image_pe=self._image_pe,
                sparse_prompt_embeddings=sparse[start : start + per_call],
                dense_prompt_embeddings=dense[start : start + per_call],
                multimask_output=multimask_output,
                image_side=image_side,
                iou_threshold=iou_threshold,
                high_res_features=self.high_res_features,
                **(options or {}),
            )
            for start in range(0, max(len(sparse), 1), per_call)
        ]
        if len(outputs) == 1:
            return outputs[0]
        return tuple(torch.cat(parts) for parts in zip(*outputs))

    @torch.no_grad()
    def predict_low_res_torch(
        self,
        point_coords: Optional[torch.Tensor],
        point_labels: Optional[torch.Tensor],
        boxes: Optional[torch.Tensor] = None,
        mask_input: Optional[torch.Tensor] = None,
        multimask_output: bool = True,
        iou_threshold: Optional[float] = None,
        hq_token_only: bool = False,
        return_object_scores: bool = False,
    ) -> Tuple[torch.Tensor, ...]:
        """`predict_torch` without the upscaling: low-res logits (B, C, 256, 256) and IoU (B, C).

        For callers that filter masks before paying for full-size ones (segment everything).
        iou_threshold: prompts whose masks all have predicted IoU <= this get NaN logits
        instead of computed ones (the decoder skips their upscaling).
        return_object_scores: SAM 2 models: also return the object-score logits (B, 1).
        """
        self._require_image()
        points = (point_coords, point_labels) if point_coords is not None else None
        options = self.model.decoder_options(hq_token_only, return_object_scores)
        with self._precision(self.decoder_dtype):
            sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
            outputs = self._decode(sparse, dense, multimask_output, mask_input is not None, iou_threshold, options)
        return tuple(output.float() for output in outputs)

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: Optional[torch.Tensor],
        point_labels: Optional[torch.Tensor],
        boxes: Optional[torch.Tensor] = None,
        mask_input: Optional[torch.Tensor] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        hq_token_only: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched prediction with prompts already in the resized frame (`ResizeLongestSide`).

        Args:
            point_coords: (B, N, 2); point_labels: (B, N); boxes: (B, 4);
            mask_input: (B, 1, 256, 256).
        Returns:
            masks (B, C, H, W) at the original size, predicted IoU (B, C), low-res logits
            (B, C, 256, 256).
        """
        _check_prompts(point_coords, point_labels, boxes, mask_input)
        low_res_masks, iou_predictions = self.predict_low_res_torch(
            point_coords, point_labels, boxes, mask_input, multimask_output, hq_token_only=hq_token_only
        )
        masks = self.model.postprocess_masks(low_res_masks, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou_predictions, low_res_masks
