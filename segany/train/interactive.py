"""Simulated interactive segmentation: the 11 decoder rounds per mask of SAM's training.

For every ground-truth mask: round 1 prompts with a point or a noisy box (`prompts`); rounds
2-9 each add a point drawn from the error region of the previous prediction; two more rounds
add nothing, one at a random place and one last. From round 2 on, the previous round's
unthresholded low-res logits of its most confident mask are the mask prompt. Everything runs
on the low-res grid (image_size / 4): targets are the ground truth there, and a point drawn in
a low-res cell is prompted at the centre of that cell in input pixels.

Fewer rounds keep the same shape: the first prompt, then rounds that add a point (one of them
blank when there are at least two), then the last round with the mask prompt alone.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from ..modeling import Sam
from ..transforms import ResizeLongestSide
from .losses import FOCAL_WEIGHT, mask_iou, sam_loss
from .prompts import Prompt, sample_correction_point, sample_first_prompt

ROUNDS = 11  # the paper's: the first prompt, 8 rounds adding a point, 2 without


@dataclass
class Example:
    """An image ready for the model and its masks on the low-res grid."""

    image: torch.Tensor  # (3, S, S) normalised and padded, S = model image size
    targets: torch.Tensor  # (N, S/4, S/4) float in {0, 1}


def prepare_example(
    model: Sam,
    image: np.ndarray,
    masks: np.ndarray,
    jitter: Optional[Sequence[float]] = None,
    rng: Optional[np.random.Generator] = None,
) -> Example:
    """(H, W, 3) uint8 image and (N, H, W) bool masks -> model input and low-res targets.

    jitter: (low, high) for large-scale jitter: the long side becomes image_size x a scale drawn
    from [low, high], then a random image_size square is cropped (or the image padded).
    Without it the image is resized exactly as `SamPredictor` does.
    """
    size = model.image_encoder.img_size
    masks_t = torch.as_tensor(masks, dtype=torch.float32)[:, None]
    if jitter is None:
        resized = torch.as_tensor(ResizeLongestSide(size).apply_image(image)).permute(2, 0, 1).float()
        h, w = resized.shape[1:]
        top = left = 0
    else:
        longest = max(1, round(size * rng.uniform(*jitter)))
        h, w = (max(1, round(n * longest / max(image.shape[:2]))) for n in image.shape[:2])
        resized = torch.as_tensor(cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1).float()
        top, left = int(rng.integers(max(h - size, 0) + 1)), int(rng.integers(max(w - size, 0) + 1))
    # Masks follow the image: resized to (h, w), cropped and padded like it, then averaged onto the grid.
    masks_t = F.interpolate(masks_t, (h, w), mode="bilinear", align_corners=False)
    pixels, masks_t = (t[..., top : top + size, left : left + size] for t in (resized, masks_t))
    ch, cw = pixels.shape[1:]
    pixels = model.preprocess(pixels)  # normalised, padded to size
    masks_t = F.pad(masks_t, (0, size - cw, 0, size - ch))
    low_res = F.avg_pool2d(masks_t, 4)[:, 0]
    return Example(pixels, (low_res > 0.5).float())


def _to_tensors(prompts: List[Prompt], scale: float) -> Dict[str, Any]:
    """Prompts in low-res cells -> prompt-encoder points and boxes in input pixels (cell centres)."""
    kwargs: Dict[str, Any] = {"points": None, "boxes": None}
    count = max(len(p.points) for p in prompts)
    if count:
        coords = torch.zeros(len(prompts), count, 2)
        labels = torch.full((len(prompts), count), -1, dtype=torch.int)  # -1: padding
        for i, prompt in enumerate(prompts):
            coords[i, : len(prompt.points)] = torch.as_tensor((prompt.points + 0.5) * scale)
            labels[i, : len(prompt.labels)] = torch.as_tensor(prompt.labels)
        kwargs["points"] = (coords, labels)
    if prompts[0].box is not None:  # the first prompts of a batch are all boxes or all points
        kwargs["boxes"] = torch.as_tensor(np.stack([p.box for p in prompts]) * scale, dtype=torch.float32)
    return kwargs


def simulate_interaction(
    model: Sam,
    embeddings: torch.Tensor,
    targets: torch.Tensor,
    rng: np.random.Generator,
    image_index: Optional[torch.Tensor] = None,
    rounds: int = ROUNDS,
    focal_weight: float = FOCAL_WEIGHT,
    high_res_features: Tuple[torch.Tensor, ...] = (),
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Loss of the interaction rounds for N masks (mean over rounds and masks).

    embeddings: (B, C, h, w) from the image encoder (with gradients when it is trained);
    targets: (N, S/4, S/4); image_index: (N,) the image of each mask (all image 0 if None);
    focal_weight: see `sam_loss`; high_res_features: the decoder's other image inputs
    (`Sam.encode_image`), each (B, ...).
    Returns the loss and metrics: mIoU of the first and last rounds.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if image_index is not None and len(embeddings) > 1:
        # N, C, h, w: one per mask. index_select, not indexing: the gradient of indexing summed the
        # masks of an image in a varying order on the CPU, so batched runs did not repeat bit for bit.
        high_res_features = model.mask_decoder.per_prompt_features(high_res_features, embeddings.shape[-2:],
                                                                     image_index)
        embeddings = embeddings.index_select(0, image_index)
    scale = model.image_encoder.img_size / targets.shape[-1]
    truths = targets.numpy() > 0.5
    # The masks of a step are decoded as one batch, which takes one kind of first prompt.
    kind = "box" if rng.random() < 0.5 else "point"
    prompts = [sample_first_prompt(truth, rng, kind) for truth in truths]
    middle = rounds - 2  # rounds between the first and the last
    blank_round = 1 + int(rng.integers(middle)) if middle >= 2 else None  # one of them adds no point
    image_pe = model.prompt_encoder.get_dense_pe()
    previous_logits = None
    losses, ious = [], []
    for round_index in range(rounds):
        adds_point = 0 < round_index < rounds - 1 and round_index != blank_round
        if adds_point and previous_logits is not None:
            predicted = (previous_logits > 0).numpy()
            prompts = [_corrected(p, pred, truth, rng) for p, pred, truth in zip(prompts, predicted, truths)]
        sparse, dense = model.prompt_encoder(
            masks=None if previous_logits is None else previous_logits[:, None], **_to_tensors(prompts, scale)
        )
        # A single point is ambiguous: 3 masks, the best supervised. A box (two corners) or several
        # points take the single-mask output, as box prompts are decoded at inference.
        ambiguous = all(len(p.points) == 1 and p.box is None for p in prompts)
        logits, iou = model.mask_decoder(embeddings, image_pe, sparse, dense, multimask_output=ambiguous,
                                         high_res_features=high_res_features)
        loss, _ = sam_loss(logits, iou, targets, focal_weight)
        losses.append(loss)
        best = iou.argmax(dim=1)
        previous_logits = logits[torch.arange(len(best)), best].detach()
        ious.append(mask_iou(previous_logits, targets).mean().item())
    return torch.stack(losses).mean(), {"first_round_miou": ious[0], "last_round_miou": ious[-1]}


def _corrected(prompt: Prompt, predicted: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> Prompt:
    point = sample_correction_point(predicted, truth, rng)
    return prompt if point is None else prompt.add_point(*point)
