"""The sam2 package's image API on segany models: code written for SAM 2 switches by its import.

    from segany.sam2 import SAM2AutomaticMaskGenerator, SAM2ImagePredictor, build_sam2

`build_sam2` takes SAM 2's config names and checkpoints; `SAM2ImagePredictor` keeps SAM 2's
conventions (images resized to a square, `normalize_coords`, boxes as two more points, float
masks, low-res logits clipped to +-32, hole and sprinkle clean-up of the logits) over
`segany.SamPredictor`; `SAM2AutomaticMaskGenerator` is `segany.SamAutomaticMaskGenerator` with
SAM 2's defaults. Unlike SAM 2's, the clean-up needs no compiled extension: it runs on any device.
"""

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .amg import SamAutomaticMaskGenerator
from .amg.regions import fill_small_regions
from .checkpoint import load_model, resolve_device
from .errors import ImageError, SegAnyError
from .modeling import CONFIGS, Sam, build_sam
from .predictor import SamPredictor, _check_prompts, _check_shape
from .transforms import ImageLike, to_rgb_uint8
from .validation import check_number

# SAM 2's size suffixes of its config names -> our configs.
SAM2_SIZES = {"t": "hiera_t", "s": "hiera_s", "b+": "hiera_b+", "l": "hiera_l"}
_CONFIG_NAME = re.compile(r"^sam2(?:\.1)?_hiera_(t|s|b\+|l)(?:\.yaml)?$")


def sam2_config_name(config_file: str) -> str:
    """Our config of a SAM 2 config name ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2_hiera_l.yaml", ...)."""
    match = _CONFIG_NAME.match(Path(str(config_file)).name)
    if match is None:
        raise SegAnyError(f"config_file {config_file!r}: not a SAM 2 image model config (sam2.1_hiera_t, _s, _b+ or _l, "
                          "as in configs/sam2.1/sam2.1_hiera_t.yaml)")
    return SAM2_SIZES[match.group(1)]


def build_sam2(
    config_file: str,
    ckpt_path: Optional[Union[str, Path]] = None,
    device: Union[str, torch.device] = "cuda",
    mode: str = "eval",
    hydra_overrides_extra: Sequence[str] = (),
    apply_postprocessing: bool = True,
    **kwargs: Any,
) -> Sam:
    """A SAM 2.1 image model as `sam2.build_sam.build_sam2` builds it: random weights without
    `ckpt_path`, else the checkpoint's (which must be of the config's size; the video modules
    it holds are not loaded). apply_postprocessing: the decoder's single-mask fallback to the most
    stable of its three masks (SAM 2's `dynamic_multimask_via_stability`), on by default as there.
    """
    if mode not in ("eval", "train"):
        raise SegAnyError(f"mode must be 'eval' or 'train', got {mode!r}")
    if hydra_overrides_extra:
        raise SegAnyError("hydra_overrides_extra is not supported: build other sizes with segany.build_sam(SamConfig(...))")
    config = CONFIGS[sam2_config_name(config_file)]
    device = resolve_device(device)
    model = build_sam(config) if ckpt_path is None else load_model(ckpt_path, device, config=config)
    model.mask_decoder.dynamic_multimask_via_stability = apply_postprocessing
    return model.to(device).train(mode == "train")


def _as_array(name: str, value: Any) -> np.ndarray:
    try:
        return np.asarray(value.detach().cpu() if torch.is_tensor(value) else value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SegAnyError(f"{name} must be an array of numbers") from None


class SAM2ImagePredictor:
    """Embed images once, then masks for prompts, with the sam2 package's methods and outputs."""

    def __init__(self, sam_model: Sam, mask_threshold: float = 0.0, max_hole_area: float = 0.0,
                 max_sprinkle_area: float = 0.0, **kwargs: Any) -> None:
        """
        Args:
            sam_model: a model of any family (SAM 2's is what this API was made for).
            mask_threshold: logits above it are foreground.
            max_hole_area, max_sprinkle_area: fill background regions / remove foreground regions
                of at most this many low-res (256 x 256) pixels before upscaling; 0: off.
            kwargs: `SamPredictor`'s dtype and decoder_dtype.
        """
        check_number("mask_threshold", mask_threshold)
        check_number("max_hole_area", max_hole_area, low=0)
        check_number("max_sprinkle_area", max_sprinkle_area, low=0)
        self.model = sam_model
        self.mask_threshold = float(mask_threshold)
        self.max_hole_area = max_hole_area
        self.max_sprinkle_area = max_sprinkle_area
        self.predictor = SamPredictor(sam_model, **kwargs)
        self.reset_predictor()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset_predictor(self) -> None:
        """Forget the images and their features."""
        self.predictor.reset_image()
        self._is_image_set = False
        self._is_batch = False
        # sam2's layout: image_embed (B, 256, 64, 64), high_res_feats [(B, 32, 256, 256), (B, 64, 128, 128)].
        self._features: Optional[Dict[str, Any]] = None
        self._orig_hw: Optional[List[Tuple[int, int]]] = None
        self._current: Optional[int] = None  # the image whose features the predictor holds

    def set_image(self, image: ImageLike) -> None:
        """Compute the features of an (H, W, 3) RGB image (numpy, 0-255) or a PIL image."""
        self.reset_predictor()
        self.predictor.set_image(image)
        self._features = {"image_embed": self.predictor.features,
                          "high_res_feats": list(self.predictor.high_res_features)}
        self._orig_hw = [self.predictor.original_size]
        self._current = 0
        self._is_image_set = True

    def set_image_batch(self, image_list: List[np.ndarray]) -> None:
        """Compute the features of several (H, W, 3) RGB images for `predict_batch`."""
        if not isinstance(image_list, (list, tuple)) or not image_list:
            raise SegAnyError(f"image_list must be a non-empty list of images, got {type(image_list).__name__}")
        self.reset_predictor()
        embeds, high_res, sizes = [], [], []
        for index, image in enumerate(image_list):
            try:
                image = to_rgb_uint8(image)
            except ImageError as error:
                raise ImageError(f"image_list[{index}]: {error}") from None
            self.predictor.set_image(image)
            embeds.append(self.predictor.features)
            high_res.append(self.predictor.high_res_features)
            sizes.append(self.predictor.original_size)
        self._features = {"image_embed": torch.cat(embeds),
                          "high_res_feats": [torch.cat(level) for level in zip(*high_res)]}
        self._orig_hw = sizes
        self._current = len(sizes) - 1
        self._is_image_set = True
        self._is_batch = True

    def get_image_embedding(self) -> torch.Tensor:
        """The image embeddings: (B, 256, 64, 64), B images set."""
        self._require_image()
        return self._features["image_embed"]

    def _require_image(self) -> None:
        if not self._is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")

    def predict(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
        return_object_scores: bool = False,
    ) -> Tuple[np.ndarray, ...]:
        """Masks for prompts on the image set (the last one after `set_image_batch`).

        Args:
            point_coords: (N, 2) or, for B prompts, (B, N, 2) x, y; point_labels: (N,) or (B, N),
                1 foreground, 0 background.
            box: (4,) or (B, 4) x0, y0, x1, y1.
            mask_input: (1, 256, 256) or (B, 1, 256, 256) low-res logits of an earlier call.
            normalize_coords: coordinates are in image pixels; else already in [0, 1].
            return_object_scores: SAM 2 models: also return the object-score logits (B, 1),
                > 0 where the model sees an object.
        Returns:
            masks (C, H, W) float32 (0/1, or logits with return_logits), predicted IoU (C,),
            low-res logits (C, 256, 256) clipped to +-32; with a leading B for B > 1 prompts.
        """
        self._require_image()
        return self._predict_image(len(self._orig_hw) - 1, point_coords, point_labels, box, mask_input,
                                   multimask_output, return_logits, normalize_coords, return_object_scores)

    def predict_batch(
        self,
        point_coords_batch: Optional[List[np.ndarray]] = None,
        point_labels_batch: Optional[List[np.ndarray]] = None,
        box_batch: Optional[List[np.ndarray]] = None,
        mask_input_batch: Optional[List[np.ndarray]] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
        return_object_scores: bool = False,
    ) -> Tuple[List[np.ndarray], ...]:
        """`predict` on every image of `set_image_batch`, each with its entry of the prompt lists;
        returns lists (one entry per image) of what `predict` returns."""
        if not self._is_batch:
            raise SegAnyError("predict_batch needs images set with .set_image_batch(...)")
        count = len(self._orig_hw)
        for name, values in (("point_coords_batch", point_coords_batch), ("point_labels_batch", point_labels_batch),
                             ("box_batch", box_batch), ("mask_input_batch", mask_input_batch)):
            if values is not None and len(values) != count:
                raise SegAnyError(f"{name} has {len(values)} entries for {count} images")
        results = [
            self._predict_image(
                index, *(None if values is None else values[index]
                         for values in (point_coords_batch, point_labels_batch, box_batch, mask_input_batch)),
                multimask_output, return_logits, normalize_coords, return_object_scores,
            )
            for index in range(count)
        ]
        return tuple(list(outputs) for outputs in zip(*results))

    def _use_image(self, index: int) -> None:
        """Point the predictor at image `index` of the features held."""
        if self._current != index:
            high_res = [level[index : index + 1] for level in self._features["high_res_feats"]]
            self.predictor.set_embedding(self._features["image_embed"][index : index + 1], self._orig_hw[index],
                                         high_res)
            self._current = index

    def _predict_image(self, index: int, point_coords, point_labels, box, mask_input, multimask_output: bool,
                       return_logits: bool, normalize_coords: bool, return_object_scores: bool) -> Tuple[np.ndarray, ...]:
        self._use_image(index)
        coords, labels, boxes, masks = self._prompts(index, point_coords, point_labels, box, mask_input,
                                                     normalize_coords)
        _check_prompts(coords, labels, boxes, masks)
        low_res, iou, *object_scores = self.predictor.predict_low_res_torch(
            coords, labels, boxes, masks, multimask_output, return_object_scores=return_object_scores
        )
        cleaned = fill_small_regions(low_res, self.mask_threshold, self.max_hole_area, self.max_sprinkle_area)
        full = self.model.postprocess_masks(cleaned, self.predictor.input_size, self.predictor.original_size)
        if not return_logits:
            full = full > self.mask_threshold
        outputs = (full.float(), iou, low_res.clamp(-32.0, 32.0), *object_scores)
        return tuple(output.squeeze(0).cpu().numpy() for output in outputs)

    def _prompts(self, index: int, point_coords, point_labels, box, mask_input,
                 normalize_coords: bool) -> Tuple[Optional[torch.Tensor], ...]:
        """The prompts as batched tensors in the model's input frame (`SamPredictor.transform`)."""
        size = self._orig_hw[index]
        # Without normalize_coords they are fractions of the image: to its pixels first.
        to_pixels = np.array([1.0, 1.0]) if normalize_coords else np.array([size[1], size[0]], dtype=np.float64)
        transform = self.predictor.transform
        device = self.device
        coords = labels = boxes = masks = None
        if point_coords is not None:
            if point_labels is None:
                raise SegAnyError("point_labels must be supplied if point_coords is supplied.")
            points, point_labels = _as_array("point_coords", point_coords), _as_array("point_labels", point_labels)
            if points.ndim == 2:
                points, point_labels = points[None], point_labels[None]
            _check_shape("point_coords", points, (None, None, 2), "(N, 2) or (B, N, 2)")
            _check_shape("point_labels", point_labels, points.shape[:2], f"{points.shape[:2]} (as point_coords)")
            if not np.array_equal(point_labels, np.round(point_labels)):
                raise SegAnyError(f"point_labels must be whole numbers (1 foreground, 0 background), got "
                                  f"{point_labels.ravel()[:4].tolist()}")
            coords = torch.as_tensor(transform.apply_coords(points * to_pixels, size), dtype=torch.float,
                                     device=device)
            labels = torch.as_tensor(point_labels, device=device).int()
        if box is not None:
            box = _as_array("box", box)
            if box.size == 0 or box.size % 4:
                raise SegAnyError(f"box must have shape (4,) or (B, 4), got {box.shape}")
            boxes = torch.as_tensor(transform.apply_boxes(box.reshape(-1, 2, 2) * to_pixels, size), dtype=torch.float,
                                    device=device)
        if mask_input is not None:
            mask_input = _as_array("mask_input", mask_input)
            if mask_input.ndim == 3:
                mask_input = mask_input[None]
            h, w = self.model.prompt_encoder.mask_input_size
            _check_shape("mask_input", mask_input, (None, 1, h, w), f"(1, {h}, {w}) or (B, 1, {h}, {w})")
            masks = torch.as_tensor(mask_input, dtype=torch.float, device=device)
        sizes = {len(t) for t in (coords, boxes, masks) if t is not None}
        if len(sizes) > 1:
            raise SegAnyError(f"points, boxes and mask_input hold different numbers of prompts: {sorted(sizes)}")
        return coords, labels, boxes, masks


class SAM2AutomaticMaskGenerator(SamAutomaticMaskGenerator):
    """`SamAutomaticMaskGenerator` with `sam2.SAM2AutomaticMaskGenerator`'s defaults and options."""

    def __init__(
        self,
        model: Sam,
        points_per_side: Optional[int] = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Optional[List[np.ndarray]] = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
        **kwargs: Any,
    ) -> None:
        """As `SamAutomaticMaskGenerator`; and as in SAM 2, min_mask_region_area also fills holes
        and drops sprinkles of up to that many low-res pixels before the filters."""
        super().__init__(
            model, points_per_side=points_per_side, points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_score_thresh,
            stability_score_offset=stability_score_offset, box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers, crop_nms_thresh=crop_nms_thresh, crop_overlap_ratio=crop_overlap_ratio,
            crop_n_points_downscale_factor=crop_n_points_downscale_factor, point_grids=point_grids,
            min_mask_region_area=min_mask_region_area, output_mode=output_mode, multimask_output=multimask_output,
            use_m2m=use_m2m, mask_threshold=mask_threshold, low_res_fill_area=min_mask_region_area, **kwargs,
        )
