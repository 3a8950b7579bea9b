"""The losses of SAM's training (paper §3 and appendix A).

Masks: focal loss and dice loss combined 20 : 1 (the paper's weights; the caller may choose
others); with several output masks only the one of lowest loss is back-propagated. IoU head: mean squared error between the predicted IoU and
the actual IoU of each output mask with the ground truth, weight 1.

Logits and targets may be at any resolution, as long as they agree.
"""

from typing import Dict, Tuple

import torch
from torch.nn import functional as F

FOCAL_WEIGHT = 20.0
DICE_WEIGHT = 1.0
IOU_WEIGHT = 1.0


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al.) averaged over the last two dimensions: (..., H, W) -> (...)."""
    probabilities = logits.sigmoid()
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_true = probabilities * targets + (1 - probabilities) * (1 - targets)
    weight = alpha * targets + (1 - alpha) * (1 - targets)
    return (weight * (1 - p_true) ** gamma * cross_entropy).mean(dim=(-2, -1))


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice coefficient of sigmoid(logits) and targets: (..., H, W) -> (...)."""
    probabilities = logits.sigmoid()
    overlap = (probabilities * targets).sum(dim=(-2, -1))
    total = probabilities.sum(dim=(-2, -1)) + targets.sum(dim=(-2, -1))
    return 1 - (2 * overlap + smooth) / (total + smooth)


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of the masks logits > 0 with the targets (> 0.5): (..., H, W) -> (...); 1 if both empty."""
    predicted, truth = logits > 0, targets > 0.5
    intersection = (predicted & truth).sum(dim=(-2, -1)).float()
    union = (predicted | truth).sum(dim=(-2, -1)).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


def sam_loss(mask_logits: torch.Tensor, iou_predictions: torch.Tensor, targets: torch.Tensor,
             focal_weight: float = FOCAL_WEIGHT) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Loss of B prompts with M output masks each.

    Args:
        mask_logits: (B, M, H, W); iou_predictions: (B, M); targets: (B, H, W) in {0, 1}.
        focal_weight: of the focal loss, the dice loss weighing 1.
    Returns:
        the scalar loss and its parts (focal, dice, iou: means over the batch; best: (B,)
        index of the mask that was supervised).
    """
    targets = targets[:, None].to(mask_logits.dtype).expand_as(mask_logits)
    focal = sigmoid_focal_loss(mask_logits, targets)  # B, M
    dice = dice_loss(mask_logits, targets)
    per_mask = focal_weight * focal + DICE_WEIGHT * dice
    best = per_mask.argmin(dim=1)
    rows = torch.arange(len(best))
    iou_loss = F.mse_loss(iou_predictions, mask_iou(mask_logits, targets).detach())
    total = per_mask[rows, best].mean() + IOU_WEIGHT * iou_loss
    parts = {"focal": focal[rows, best].mean().detach(), "dice": dice[rows, best].mean().detach(),
             "iou": iou_loss.detach(), "best": best}
    return total, parts
