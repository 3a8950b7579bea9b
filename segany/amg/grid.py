"""Where the automatic generator prompts: point grids and the crops of the multi-crop zoom."""

import math
from itertools import product
from typing import List, Sequence, Tuple

import numpy as np

Box = List[int]  # x0, y0, x1, y1 in pixels


def build_point_grid(points_per_side: int) -> np.ndarray:
    """(n*n, 2) points (x, y) in [0, 1], cell centres of an n x n grid, row by row."""
    offset = 1 / (2 * points_per_side)
    side = np.linspace(offset, 1 - offset, points_per_side)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_layer_point_grids(points_per_side: int, n_layers: int, downscale_factor: int) -> List[np.ndarray]:
    """One grid per crop layer; layer i has points_per_side / downscale_factor**i points a side."""
    return [build_point_grid(int(points_per_side / downscale_factor**i)) for i in range(n_layers + 1)]


def generate_crop_boxes(image_size: Sequence[int], n_layers: int, overlap_ratio: float) -> Tuple[List[Box], List[int]]:
    """Crop boxes and their layer: the whole image, then 2**i x 2**i overlapping crops per layer i.

    image_size: (H, W). overlap_ratio: overlap between neighbouring crops as a fraction of the
    image's short side (at layer 1; it halves with each further layer).
    """
    height, width = image_size
    boxes, layers = [[0, 0, width, height]], [0]
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * min(height, width) * (2 / per_side))
        crop_w = math.ceil((overlap * (per_side - 1) + width) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + height) / per_side)
        x0s = [int((crop_w - overlap) * i) for i in range(per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)])
            layers.append(layer)
    return boxes, layers
