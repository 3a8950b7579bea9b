"""Box operations of the automatic generator: boxes of masks, IoU, greedy NMS, crop-edge test.

Boxes are (N, 4) x0, y0, x1, y1. Boxes of masks use the official generator's convention:
x1, y1 are the last row and column inside the mask (so width = x1 - x0 is one pixel short).
"""

from typing import Sequence

import numpy as np
import torch


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) float boxes -> (N, N) IoU, computed term by term as torchvision's NMS does."""
    area = box_area(boxes)
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    size = (bottom_right - top_left).clamp(min=0)
    inter = size[..., 0] * size[..., 1]
    return inter / (area[:, None] + area[None, :] - inter)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first.

    A box is dropped when its IoU with a kept, higher-scored box exceeds iou_threshold. Equal
    scores are visited in the order torch.sort gives them, which is what torchvision's
    `batched_nms` (used by the official generator) does, so ties resolve the same way.
    """
    if len(boxes) == 0:
        return torch.empty(0, dtype=torch.long)
    order = torch.sort(scores, descending=True).indices
    overlaps = (box_iou(boxes[order].float()) > iou_threshold).numpy()
    kept = np.ones(len(order), dtype=bool)
    for i in range(len(order)):
        if kept[i]:
            kept[i + 1 :] &= ~overlaps[i, i + 1 :]
    return order[torch.from_numpy(kept)]


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) int64 boxes (last row and column inside); zeros for empty masks."""
    if masks.numel() == 0:
        return torch.zeros(masks.shape[0], 4, dtype=torch.long)
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # N, H and N, W
    boxes = torch.stack([*first_and_last(cols), *first_and_last(rows)], dim=1)[:, [0, 2, 1, 3]]
    return boxes * (rows.any(dim=1, keepdim=True))


def first_and_last(present: torch.Tensor):
    """(N, L) bool -> index of the first and of the last True per row (0 for empty rows)."""
    length = present.shape[1]
    first = present.int().argmax(dim=1)
    last = length - 1 - present.flip(1).int().argmax(dim=1)
    return first, last


def is_box_near_crop_edge(
    boxes: torch.Tensor, crop_box: Sequence[int], image_box: Sequence[int], atol: float = 20.0
) -> torch.Tensor:
    """(N,) True for boxes (crop frame) within atol pixels of a crop edge that is not an image edge."""
    crop = torch.as_tensor(crop_box, dtype=torch.float)
    image = torch.as_tensor(image_box, dtype=torch.float)
    boxes = boxes.float() + crop[[0, 1, 0, 1]]
    near_crop = torch.isclose(boxes, crop[None], atol=atol, rtol=0)
    near_image = torch.isclose(boxes, image[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1)
