"""SamAutomaticMaskGenerator: segment everything by prompting the model with a grid of points.

Same parameters and records as `segment_anything.SamAutomaticMaskGenerator`, and the same
masks. What it does differently is when work happens: the predicted-IoU filter runs on the
low-resolution logits (it does not depend on resolution), so only its survivors are upscaled
to the image, a few at a time, for the stability score (computed at full resolution, as the
reference does); masks are kept run-length encoded from then on.
"""

from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import SegAnyError
from ..masks import Rle, mask_to_uncompressed_rle, masks_to_rles, region_to_rle, rle_area, rle_to_mask, rles_to_boxes
from ..modeling import Sam
from ..predictor import SamPredictor
from ..transforms import ImageLike, to_rgb_uint8
from ..validation import check_number
from .boxes import first_and_last, box_area, is_box_near_crop_edge, masks_to_boxes, nms
from .grid import Box, build_layer_point_grids, generate_crop_boxes
from .regions import fill_small_regions, remove_small_regions

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
# Full-resolution logits upscaled at once: 2**25 float32 values, 128 MiB.
UPSCALE_CHUNK_PIXELS = 1 << 25
# 4096**2 = 16.7 M prompts an image: beyond that a typo, not a setting.
MAX_POINTS_PER_SIDE = 4096


@dataclass
class MaskCandidates:
    """Masks that passed the filters so far, one row each."""

    rles: List[Rle]  # COCO compressed, image frame
    boxes: torch.Tensor  # (N, 4) int64 x0, y0, x1, y1 (last pixel inside)
    iou_preds: torch.Tensor  # (N,) float32 predicted IoU
    stability: torch.Tensor  # (N,) float32 stability score
    points: torch.Tensor  # (N, 2) float64 prompt point x, y
    crop_boxes: torch.Tensor  # (N, 4) int64 crop the mask was found in

    def __len__(self) -> int:
        return len(self.rles)

    def select(self, index: torch.Tensor) -> "MaskCandidates":
        """The rows at `index` (int64 indices or a bool mask), in that order."""
        rows = torch.arange(len(self))[index].tolist()
        return MaskCandidates(
            [self.rles[i] for i in rows], *(getattr(self, f.name)[index] for f in fields(self)[1:])
        )

    @staticmethod
    def concatenate(parts: Sequence["MaskCandidates"]) -> "MaskCandidates":
        return MaskCandidates(
            [rle for part in parts for rle in part.rles],
            *(torch.cat([getattr(part, f.name) for part in parts]) for f in fields(MaskCandidates)[1:]),
        )

    @staticmethod
    def empty() -> "MaskCandidates":
        int_box = torch.zeros(0, 4, dtype=torch.long)
        return MaskCandidates(
            [], int_box, torch.zeros(0), torch.zeros(0), torch.zeros(0, 2, dtype=torch.float64), int_box.clone()
        )


def check_settings(points_per_side: Optional[int] = 32, points_per_batch: int = 64, pred_iou_thresh: float = 0.88,
                   stability_score_thresh: float = 0.95, stability_score_offset: float = 1.0,
                   box_nms_thresh: float = 0.7, crop_n_layers: int = 0, crop_nms_thresh: float = 0.7,
                   crop_overlap_ratio: float = 512 / 1500, crop_n_points_downscale_factor: int = 1,
                   point_grids: Optional[List[np.ndarray]] = None, min_mask_region_area: int = 0,
                   output_mode: str = "binary_mask") -> List[np.ndarray]:
    """Check `SamAutomaticMaskGenerator`'s settings (SegAnyError naming the first bad one) and
    return the point grid of each crop layer."""
    if (points_per_side is None) == (point_grids is None):
        raise SegAnyError("give exactly one of points_per_side and point_grids")
    for name, value, low in (("points_per_batch", points_per_batch, 1), ("crop_n_layers", crop_n_layers, 0),
                             ("crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1),
                             ("min_mask_region_area", min_mask_region_area, 0)):
        check_number(name, value, integer=True, low=low)
    for name, value in (("pred_iou_thresh", pred_iou_thresh), ("stability_score_thresh", stability_score_thresh),
                        ("box_nms_thresh", box_nms_thresh), ("crop_nms_thresh", crop_nms_thresh),
                        ("crop_overlap_ratio", crop_overlap_ratio)):
        check_number(name, value, low=0, high=1)
    check_number("stability_score_offset", stability_score_offset, low=0)
    if output_mode not in OUTPUT_MODES:
        raise SegAnyError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}; got {output_mode!r}")
    if point_grids is None:
        check_number("points_per_side", points_per_side, integer=True, low=1, high=MAX_POINTS_PER_SIDE)
        point_grids = build_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
    if len(point_grids) != crop_n_layers + 1:
        raise SegAnyError(f"point_grids has {len(point_grids)} grids; crop_n_layers={crop_n_layers} needs "
                          f"{crop_n_layers + 1}")
    grids = []  # float64: the prompts' pixel coordinates are computed as the official generator does
    for i, grid in enumerate(point_grids):
        try:
            grid = np.asarray(grid, dtype=np.float64)
        except (TypeError, ValueError):
            raise SegAnyError(f"point_grids[{i}] must be an (N, 2) array of numbers") from None
        if grid.ndim != 2 or grid.shape[1] != 2 or not len(grid):
            raise SegAnyError(f"point_grids[{i}] must have shape (N, 2) with N >= 1, got {grid.shape}")
        if not np.isfinite(grid).all():
            raise SegAnyError(f"point_grids[{i}] holds NaN or infinite values")
        if grid.min() < 0 or grid.max() > 1:
            raise SegAnyError(f"point_grids[{i}] must hold points (x, y) in [0, 1], found {grid.min():g}..{grid.max():g}")
        grids.append(grid)
    return grids


class SamAutomaticMaskGenerator:
    def __init__(
        self,
        model: Sam,
        points_per_side: Optional[int] = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Optional[List[np.ndarray]] = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        dtype: torch.dtype = torch.float32,
        decoder_dtype: torch.dtype = torch.float32,
        multimask_output: bool = True,
        use_m2m: bool = False,
        mask_threshold: float = 0.0,
        low_res_fill_area: float = 0,
    ) -> None:
        """
        Args:
            model: the SAM model.
            points_per_side: points along each side of the grid (points_per_side**2 prompts);
                None when `point_grids` are given instead.
            points_per_batch: prompts decoded together (memory, not results).
            pred_iou_thresh: keep masks whose predicted IoU is above this, in [0, 1] (0 disables).
            stability_score_thresh: keep masks whose stability score is at least this
                (0 disables). The score is the IoU of the mask thresholded at +offset and at
                -offset (logits).
            stability_score_offset: that offset.
            box_nms_thresh: box IoU above which NMS drops the lower-scored mask of a crop.
            crop_n_layers: layers of zoomed-in crops; layer i has 2**i x 2**i crops.
            crop_nms_thresh: box IoU for NMS between crops (masks from smaller crops win).
            crop_overlap_ratio: overlap of neighbouring crops, as a fraction of the short
                image side at layer 1.
            crop_n_points_downscale_factor: layer i uses points_per_side / factor**i points a side.
            point_grids: explicit (N, 2) grids per layer, points (x, y) in [0, 1].
            min_mask_region_area: fill holes and remove islands smaller than this many pixels
                (then NMS again); 0 disables.
            output_mode: "binary_mask" (H, W) bool, "uncompressed_rle", or "coco_rle".
            dtype, decoder_dtype: precision of the image encoder and of the mask decoder, as in
                `SamPredictor` (torch.bfloat16: faster, approximate).
            multimask_output: three masks per point (SAM 2's generator can ask for one).
            use_m2m: SAM 2's mask-to-mask refinement: every mask is predicted once more from its
                point with its own low-res logits (clipped to +-32) as the mask prompt, single
                mask, before the filters.
            mask_threshold: logits above it are foreground (also for the stability score).
            low_res_fill_area: SAM 2's clean-up of each mask's low-res logits before the filters:
                holes and islands of at most this many 256 x 256 pixels are filled / removed.
        """
        point_grids = check_settings(points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh,
                                     stability_score_offset, box_nms_thresh, crop_n_layers, crop_nms_thresh,
                                     crop_overlap_ratio, crop_n_points_downscale_factor, point_grids,
                                     min_mask_region_area, output_mode)
        self.predictor = SamPredictor(model, dtype=dtype, decoder_dtype=decoder_dtype)
        self.point_grids = point_grids
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.multimask_output = multimask_output
        self.use_m2m = use_m2m
        check_number("mask_threshold", mask_threshold)
        check_number("low_res_fill_area", low_res_fill_area, low=0)
        self.mask_threshold = float(mask_threshold)
        self.low_res_fill_area = low_res_fill_area

    @torch.no_grad()
    def generate(self, image: ImageLike, embedding: Optional[torch.Tensor] = None,
                 high_res_features: Sequence[torch.Tensor] = ()) -> List[Dict[str, Any]]:
        """Masks of everything in an (H, W, 3) RGB image, as records like the official generator's.

        Each record: segmentation (per output_mode), area (pixels), bbox [x, y, w, h],
        predicted_iou, point_coords [[x, y]], stability_score, crop_box [x, y, w, h].
        embedding: the whole image's embedding if already computed (`SamPredictor.get_image_embedding`,
        (1, C, g, g)) with `SamPredictor.get_high_res_features()` for SAM-HQ: the encoder then runs
        only for the zoomed-in crops.
        """
        candidates = self.generate_candidates(image, embedding, high_res_features)
        return [self._record(candidates, i) for i in range(len(candidates))]

    @torch.no_grad()
    def generate_candidates(self, image: ImageLike, embedding: Optional[torch.Tensor] = None,
                            high_res_features: Sequence[torch.Tensor] = ()) -> MaskCandidates:
        """The kept masks as `MaskCandidates`, before they are turned into records."""
        image = to_rgb_uint8(image)
        image_size = image.shape[:2]
        crop_boxes, layers = generate_crop_boxes(image_size, self.crop_n_layers, self.crop_overlap_ratio)
        candidates = MaskCandidates.concatenate(
            [self._process_crop(image, box, layer, embedding if layer == 0 else None, high_res_features)
             for box, layer in zip(crop_boxes, layers)]
        )
        if len(crop_boxes) > 1:
            prefer_small_crops = 1 / box_area(candidates.crop_boxes)
            candidates = candidates.select(nms(candidates.boxes, prefer_small_crops, self.crop_nms_thresh))
        if self.min_mask_region_area > 0:
            candidates = self._remove_small_regions(candidates)
        return candidates

    def _process_crop(self, image: np.ndarray, crop_box: Box, layer: int, embedding: Optional[torch.Tensor],
                      high_res_features: Sequence[torch.Tensor]) -> MaskCandidates:
        """embedding (with its high_res_features): the crop's, if already computed."""
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        if embedding is None:
            self.predictor.set_image(crop)
        else:
            self.predictor.set_embedding(embedding, crop.shape[:2], high_res_features)
        points = self.point_grids[layer] * np.array(crop.shape[1::-1])  # x, y in crop pixels
        found = MaskCandidates.concatenate(
            [
                self._process_batch(points[start : start + self.points_per_batch], crop_box, image.shape[:2])
                for start in range(0, len(points), self.points_per_batch)
            ]
            or [MaskCandidates.empty()]
        )
        self.predictor.reset_image()
        found = found.select(nms(found.boxes, found.iou_preds, self.box_nms_thresh))
        found.boxes = found.boxes + torch.tensor([x0, y0, x0, y0])
        found.points = found.points + torch.tensor([x0, y0])
        return found

    def _process_batch(self, points: np.ndarray, crop_box: Box, image_size: Tuple[int, int]) -> MaskCandidates:
        """Masks for a batch of (B, 2) points in crop pixels; boxes in the crop frame."""
        predictor = self.predictor
        device = predictor.device  # the decoder and the upscaling run there; filtering and encoding on the CPU
        coords = torch.as_tensor(predictor.transform.apply_coords(points, predictor.original_size), device=device)
        labels = torch.ones(len(points), 1, dtype=torch.int, device=device)
        # Without refinement, masks the IoU filter drops need not be upscaled inside the decoder.
        iou_threshold = self.pred_iou_thresh if self.pred_iou_thresh > 0 and not self.use_m2m else None
        low_res, iou_preds = predictor.predict_low_res_torch(
            coords[:, None], labels, multimask_output=self.multimask_output, iou_threshold=iou_threshold
        )
        per_point = low_res.shape[1]  # 3 ambiguity-aware masks, or 1 (SAM-HQ's decoder, multimask_output off)
        low_res, iou_preds = low_res.flatten(0, 1), iou_preds.flatten(0, 1)  # B*per_point masks
        points = torch.as_tensor(points).repeat_interleave(per_point, dim=0)
        if self.use_m2m:
            low_res, iou_preds = predictor.predict_low_res_torch(
                coords.repeat_interleave(per_point, dim=0)[:, None], labels.repeat_interleave(per_point, dim=0),
                mask_input=low_res.clamp(-32, 32)[:, None], multimask_output=False,
            )
            low_res, iou_preds = low_res[:, 0], iou_preds[:, 0]
        iou_preds = iou_preds.cpu()
        if self.pred_iou_thresh > 0:
            keep = iou_preds > self.pred_iou_thresh
            low_res, iou_preds, points = low_res[keep.to(device)], iou_preds[keep], points[keep]
        low_res = fill_small_regions(low_res, self.mask_threshold, self.low_res_fill_area, self.low_res_fill_area)

        height, width = predictor.original_size
        per_chunk = max(1, UPSCALE_CHUNK_PIXELS // (height * width))
        parts = [
            self._full_size_masks(low_res[i : i + per_chunk], iou_preds[i : i + per_chunk],
                                  points[i : i + per_chunk], crop_box, image_size)
            for i in range(0, len(low_res), per_chunk)
        ]
        return MaskCandidates.concatenate(parts) if parts else MaskCandidates.empty()

    def _full_size_masks(
        self,
        low_res: torch.Tensor,
        iou_preds: torch.Tensor,
        points: torch.Tensor,
        crop_box: Box,
        image_size: Tuple[int, int],
    ) -> MaskCandidates:
        """Upscale (N, 256, 256) logits to the crop, filter by stability and crop edges, encode.

        Thresholds are only evaluated inside each mask's `_reach`: outside it every logit is
        below all of them, so counts and masks are those of the whole image.
        """
        predictor = self.predictor
        threshold, offset = self.mask_threshold, self.stability_score_offset
        logits = predictor.model.postprocess_masks(low_res[:, None], predictor.input_size,
                                                   predictor.original_size)[:, 0].cpu()
        reach = _reach(low_res, threshold - abs(offset), predictor.input_size, predictor.original_size).cpu()
        # numpy compares and counts twice as fast as torch here.
        regions = [logits[i, y0:y1, x0:x1].numpy() for i, (y0, y1, x0, x1) in enumerate(reach.tolist())]
        stability = _stability(regions, threshold, offset)
        if self.stability_score_thresh > 0:
            keep = stability >= self.stability_score_thresh
            iou_preds, points, stability, reach = iou_preds[keep], points[keep], stability[keep], reach[keep]
            regions = [r for r, k in zip(regions, keep.tolist()) if k]
        height, width = image_size
        x_offset, y_offset = crop_box[:2]
        rles = [
            region_to_rle(region > threshold, y_offset + y0, x_offset + x0, height, width)
            for region, (y0, y1, x0, x1) in zip(regions, reach.tolist())
        ]
        del logits, regions
        boxes = _boxes_in_crop(rles, crop_box)
        keep = ~is_box_near_crop_edge(boxes, crop_box, [0, 0, width, height])
        return MaskCandidates(
            [rle for rle, k in zip(rles, keep.tolist()) if k], boxes[keep], iou_preds[keep], stability[keep],
            points[keep], torch.tensor([crop_box], dtype=torch.long).expand(int(keep.sum()), 4).clone(),
        )

    def _remove_small_regions(self, candidates: MaskCandidates) -> MaskCandidates:
        """Fill small holes, drop small islands, then NMS again preferring unchanged masks."""
        if len(candidates) == 0:
            return candidates
        new_rles, new_boxes, unchanged = [], [], []
        for rle in candidates.rles:  # one mask at a time: memory stays at one image's worth
            mask, holes_changed = remove_small_regions(rle_to_mask(rle), self.min_mask_region_area, "holes")
            mask, islands_changed = remove_small_regions(mask, self.min_mask_region_area, "islands")
            changed = holes_changed or islands_changed
            unchanged.append(not changed)
            new_rles.append(masks_to_rles(mask[None])[0] if changed else rle)
            new_boxes.append(masks_to_boxes(torch.from_numpy(mask[None]))[0])
        new_boxes = torch.stack(new_boxes)
        keep = nms(new_boxes, torch.tensor(unchanged, dtype=torch.float), max(self.box_nms_thresh, self.crop_nms_thresh))
        result = candidates.select(keep)
        result.rles = [new_rles[i] for i in keep.tolist()]
        result.boxes = new_boxes[keep]
        return result

    def _record(self, candidates: MaskCandidates, i: int) -> Dict[str, Any]:
        rle = candidates.rles[i]
        if self.output_mode == "coco_rle":
            segmentation: Any = rle
        elif self.output_mode == "binary_mask":
            segmentation = rle_to_mask(rle)
        else:
            segmentation = mask_to_uncompressed_rle(rle_to_mask(rle))
        return {
            "segmentation": segmentation,
            "area": rle_area(rle),
            "bbox": xyxy_to_xywh(candidates.boxes[i].tolist()),
            "predicted_iou": candidates.iou_preds[i].item(),
            "point_coords": [candidates.points[i].tolist()],
            "stability_score": candidates.stability[i].item(),
            "crop_box": xyxy_to_xywh(candidates.crop_boxes[i].tolist()),
        }


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """(N, H, W) logits -> (N,) IoU of the masks thresholded at threshold + offset and - offset.

    The first mask lies inside the second, so the IoU is the ratio of their areas.
    """
    return _stability([m.numpy() for m in logits], threshold, offset)


def _stability(logits: Sequence[np.ndarray], threshold: float, offset: float) -> torch.Tensor:
    """`stability_score` of a list of logit maps (any sizes); 0 / 0 gives NaN, as in the reference."""
    inner = [np.count_nonzero(m > threshold + offset) for m in logits]
    outer = [np.count_nonzero(m > threshold - offset) for m in logits]
    return torch.tensor(inner, dtype=torch.long) / torch.tensor(outer, dtype=torch.long)


def _reach(
    low_res: torch.Tensor, threshold: float, input_size: Tuple[int, int], original_size: Tuple[int, int]
) -> torch.Tensor:
    """(N, 4) [y0, y1, x0, x1) of the full-size pixels that can exceed `threshold`, per mask.

    A bilinear resize writes convex combinations of neighbouring inputs, so a pixel can only
    exceed the threshold where one of the low-res cells it is made from does (with a margin
    for rounding). The ranges follow the cells through `Sam.postprocess_masks`: x4 to the
    model's input size, then to the original size; they err on the wide side.
    """
    margin = 1e-3 + 1e-5 * float(low_res.abs().max()) if low_res.numel() else 0.0
    hot = low_res > threshold - margin  # N, 256, 256
    rows, cols = hot.any(dim=2), hot.any(dim=1)
    bounds = []
    for present, size_in, size_out in ((rows, input_size[0], original_size[0]), (cols, input_size[1], original_size[1])):
        first, last = first_and_last(present)
        scale = size_in / size_out  # source pixels per output pixel of the second resize
        start = torch.floor((4 * first - 3 - 0.5) / scale - 0.5) - 1
        stop = torch.ceil((4 * last + 6 + 1.5) / scale - 0.5) + 2
        start, stop = start.clamp(0, size_out).long(), stop.clamp(0, size_out).long()
        empty = ~present.any(dim=1)
        bounds += [torch.where(empty, 0, start), torch.where(empty, 0, stop)]
    return torch.stack(bounds, dim=1)


def _boxes_in_crop(rles: List[Rle], crop_box: Box) -> torch.Tensor:
    """Boxes (N, 4) of image-frame RLEs in the crop frame, last row and column inside; zeros if empty."""
    x, y, w, h = torch.from_numpy(rles_to_boxes(rles)).long().unbind(dim=1) if rles else torch.zeros(4, 0).long()
    x0, y0 = crop_box[:2]
    boxes = torch.stack([x - x0, y - y0, x + w - 1 - x0, y + h - 1 - y0], dim=1)
    return boxes * (w > 0)[:, None]


def xyxy_to_xywh(box: List[int]) -> List[int]:
    x0, y0, x1, y1 = box
    return [x0, y0, x1 - x0, y1 - y0]
