"""Edge maps for the boundary benchmark: the model's, by prompting (the paper's zero-shot edge
detection), and classical baselines. Every detector takes an (H, W, 3) uint8 RGB image and
returns (H, W) float32 edge strength in [0, 1], thinned to one-pixel ridges where the method
calls for it."""

from typing import Callable, Dict

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..amg.boxes import masks_to_boxes, nms
from ..amg.generator import UPSCALE_CHUNK_PIXELS
from ..amg.grid import build_point_grid
from ..predictor import SamPredictor

EDGE_POINTS_PER_SIDE = 16  # 256 points, 768 masks
EDGE_NMS_THRESHOLD = 0.7  # box IoU above which the lower-scored duplicate mask is dropped
CANNY_THRESHOLDS = np.linspace(20, 250, 24)  # upper hysteresis thresholds averaged into a soft map

EdgeDetector = Callable[[np.ndarray], np.ndarray]


def sam_edges(predictor: SamPredictor, image: np.ndarray, points_per_side: int = EDGE_POINTS_PER_SIDE,
              nms_threshold: float = EDGE_NMS_THRESHOLD, points_per_batch: int = 64) -> np.ndarray:
    """The model's edges: a grid of foreground points, 3 masks each, duplicates removed by box
    NMS on predicted IoU; the Sobel gradient of each remaining mask's probability map, kept near
    the mask's boundary (within a pixel of the thresholded mask's edge), maximum over the masks,
    scaled to [0, 1] and thinned by edge NMS. Full-size masks are made a few at a time
    (points_per_batch is lowered for large images)."""
    predictor.set_image(image)
    height, width = image.shape[:2]
    points = build_point_grid(points_per_side) * np.array([width, height])
    points_per_batch = max(1, min(points_per_batch, UPSCALE_CHUNK_PIXELS // (3 * height * width)))  # memory
    low_res, scores, boxes, nonempty = [], [], [], []
    for start in range(0, len(points), points_per_batch):
        chunk = points[start : start + points_per_batch, None, :]  # (B, 1, 2)
        logits, iou, chunk_low_res = predictor.predict_batch(chunk, np.ones(chunk.shape[:2]), return_logits=True)
        masks = torch.from_numpy(logits > predictor.model.mask_threshold).flatten(0, 1)  # (B * 3, H, W)
        boxes.append(masks_to_boxes(masks))
        nonempty.append(masks.flatten(1).any(dim=1))
        scores.append(torch.from_numpy(iou).flatten())
        low_res.append(torch.from_numpy(chunk_low_res).flatten(0, 1))
    low_res_all = torch.cat(low_res)
    present = torch.nonzero(torch.cat(nonempty)).flatten()
    kept = present[nms(torch.cat(boxes)[present], torch.cat(scores)[present], nms_threshold)]
    edges = torch.zeros(height, width)
    for start in range(0, len(kept), 3 * points_per_batch):
        chunk = low_res_all[kept[start : start + 3 * points_per_batch], None]  # (B, 1, h, w)
        with torch.no_grad():
            logits = predictor.model.postprocess_masks(chunk, predictor.input_size, predictor.original_size)
        edges = torch.maximum(edges, _boundary_gradient(logits, predictor.model.mask_threshold).amax(dim=0))
    peak = float(edges.max())
    return edge_nms(edges.numpy() / peak) if peak > 0 else edges.numpy()


def _boundary_gradient(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, 1, H, W) mask logits -> (B, H, W) Sobel gradient magnitude of the probabilities, zero
    farther than a pixel from the edge of the mask thresholded at `threshold`."""
    probability = torch.sigmoid(logits)
    magnitude = _sobel_magnitude(probability)
    inside = (logits > threshold).float()
    dilated = F.max_pool2d(inside, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-inside, 3, stride=1, padding=1)
    return (magnitude * (dilated - eroded))[:, 0]


def _sobel_magnitude(values: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 1, H, W) Sobel gradient magnitude / 4 (1 across a sharp 0-1 step)."""
    kernel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
    kernels = torch.stack([kernel_x, kernel_x.T])[:, None]  # (2, 1, 3, 3)
    gradient = F.conv2d(F.pad(values, (1, 1, 1, 1), mode="replicate"), kernels)
    return gradient.square().sum(dim=1, keepdim=True).sqrt()


def sobel_edges(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Sobel gradient magnitude of the Gaussian-smoothed grey image, scaled to [0, 1], edge NMS."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    grey = cv2.GaussianBlur(grey, (0, 0), sigma)
    magnitude = _sobel_magnitude(torch.from_numpy(grey)[None, None])[0, 0].numpy()
    peak = float(magnitude.max())
    return edge_nms(magnitude / peak) if peak > 0 else magnitude


def canny_edges(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """OpenCV Canny over a range of thresholds (lower = 0.4 x upper) on the smoothed grey image:
    each pixel's strength is the fraction of thresholds that mark it (Canny thins its own edges)."""
    grey = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (0, 0), sigma)
    votes = sum((cv2.Canny(grey, 0.4 * high, high, L2gradient=True) > 0).astype(np.float32)
                for high in CANNY_THRESHOLDS)
    return votes / len(CANNY_THRESHOLDS)


BASELINES: Dict[str, EdgeDetector] = {"Sobel": sobel_edges, "Canny": canny_edges}


def edge_nms(edges: np.ndarray, radius: int = 1, border: int = 5, multiplier: float = 1.01) -> np.ndarray:
    """Non-maximum suppression of an (H, W) edge map across its edges (Dollar and Zitnick's
    structured-edge post-processing): a pixel survives when, times `multiplier`, it is not below
    its neighbours up to `radius` pixels away along the edge normal; strengths fade to 0 over
    `border` pixels at the image border."""
    edges = edges.astype(np.float32)
    normal = edge_orientation(edges)
    height, width = edges.shape
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    cos, sin = np.cos(normal).astype(np.float32), np.sin(normal).astype(np.float32)
    keep = np.ones(edges.shape, dtype=bool)
    for step in [d for d in range(-radius, radius + 1) if d]:
        neighbour = cv2.remap(edges, columns + step * cos, rows + step * sin, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        keep &= edges * multiplier >= neighbour
    thinned = edges * keep
    border = min(border, width // 2, height // 2)
    if border > 0:
        ramp = np.minimum(np.arange(border, dtype=np.float32) / border, 1)
        thinned[:, :border] *= ramp
        thinned[:, width - border :] *= ramp[::-1]
        thinned[:border] *= ramp[:, None]
        thinned[height - border :] *= ramp[::-1, None]
    return thinned


def edge_orientation(edges: np.ndarray, radius: int = 4) -> np.ndarray:
    """(H, W) angle in [0, pi) of the normal to the edges, from the second derivatives of the
    edge map smoothed by a triangle filter of `radius`."""
    triangle = np.concatenate([np.arange(1, radius + 2), np.arange(radius, 0, -1)]).astype(np.float32)
    triangle /= triangle.sum()
    smooth = cv2.sepFilter2D(edges.astype(np.float32), -1, triangle, triangle, borderType=cv2.BORDER_REFLECT)
    d_rows, d_columns = np.gradient(smooth)
    d_columns_columns = np.gradient(d_columns, axis=1)
    d_rows_columns, d_rows_rows = np.gradient(d_rows, axis=1), np.gradient(d_rows, axis=0)
    sign = np.where(d_rows_columns > 0, -1.0, 1.0)  # of -d_rows_columns, 0 as +1 for exactly horizontal edges
    return np.mod(np.arctan(d_rows_rows * sign / (d_columns_columns + 1e-5)), np.pi)
