"""Localisation warm-up: teach a decoder trained from scratch where a prompt is.

A SAM decoder places a mask by attention between image positions and prompt tokens, both
carrying the same kind of positional encoding. From random weights it does not yet do this,
and on real masks (tiny nuclei beside whole-image regions, prompts anywhere inside them) the
loss is lowest for an empty mask: training settles there for thousands of steps. On discs
centred on their point prompt the same decoder crosses that plateau in a few hundred steps.
So before the real data, the prompt encoder and mask decoder learn discs of random sizes,
over image embeddings of small noise (no image is needed: the task is where, not what). The
steps take turns with the three kinds of prompt the real rounds use: the disc's centre (3
masks), its box, and the centre with more points inside (both through the single-mask output).
`init_for_localisation` prepares a fresh model for it.
"""

import numpy as np
import torch
from tqdm import tqdm

from ..modeling import Sam
from ..modeling.transformer import Attention
from .losses import mask_iou, sam_loss

DISCS_PER_STEP = 16
RADII = (0.04, 0.24)  # disc radius range, as a fraction of the low-res grid side
EMBEDDING_NOISE = 0.2  # std of the stand-in image embedding; a fresh model's real one is about this
LEARNING_RATE = 1e-3  # the plateau's length goes as 1 / lr; higher rates did not shorten it further


def init_for_localisation(model: Sam, embedding_scale: float) -> None:
    """Equal query and key projections in the decoder's attention, so that attention favours
    positions whose encoding resembles the prompt's from the first step; the image embedding
    scaled down (the weight of the encoder's last norm) and the mask prompt's embedding started
    at zero (the weight of its last conv), so that neither drowns the positional encodings while
    untrained."""
    with torch.no_grad():
        model.image_encoder.neck[-1].weight.fill_(embedding_scale)
        model.prompt_encoder.mask_downscaling[-1].weight.zero_()
        for attention in model.mask_decoder.transformer.modules():
            if isinstance(attention, Attention):
                attention.k_proj.weight.copy_(attention.q_proj.weight)


def localisation_warmup(model: Sam, steps: int, seed: int, lr: float = LEARNING_RATE, progress: bool = True) -> float:
    """Train prompt encoder and mask decoder `steps` steps on discs around point prompts.

    Returns the mean IoU of the last 60 steps: of the best of 3 masks, or of the single mask.
    """
    rng = np.random.default_rng([seed, 2])
    generator = torch.Generator().manual_seed(seed)
    parameters = [*model.prompt_encoder.parameters(), *model.mask_decoder.parameters()]
    optimizer = torch.optim.AdamW([p for p in parameters if p.requires_grad], lr=lr, weight_decay=0.1)
    side = 4 * model.prompt_encoder.image_embedding_size[0]  # low-res grid
    scale = model.image_encoder.img_size / side
    rows, cols = np.mgrid[:side, :side]
    image_pe = model.prompt_encoder.get_dense_pe()
    embedding_shape = (1, model.prompt_encoder.embed_dim, *model.prompt_encoder.image_embedding_size)
    ious = []
    for step in tqdm(range(steps), desc="localisation warm-up", unit="step", disable=not progress):
        centres = rng.uniform(0, side, (DISCS_PER_STEP, 2))
        radii = rng.uniform(*RADII, DISCS_PER_STEP) * side
        distance2 = (cols - centres[:, 0, None, None]) ** 2 + (rows - centres[:, 1, None, None]) ** 2
        targets = torch.as_tensor(distance2 < radii[:, None, None] ** 2, dtype=torch.float32)
        kind = step % 3  # 0: centre, 1: box, 2: centre and more points
        if kind == 1:
            boxes = np.concatenate([centres - radii[:, None], centres + radii[:, None]], axis=1).clip(0, side)
            prompts = {"points": None, "boxes": torch.as_tensor(boxes * scale, dtype=torch.float32)}
        else:
            points = centres[:, None]
            if kind == 2:  # 1 or 2 more points, uniform in the disc
                extra = int(rng.integers(1, 3))
                turns, area_fractions = rng.uniform(0, 1, (2, DISCS_PER_STEP, extra))
                angles, distances = 2 * np.pi * turns, np.sqrt(area_fractions) * radii[:, None]
                offsets = np.stack([np.cos(angles), np.sin(angles)], axis=-1) * distances[..., None]
                points = np.concatenate([points, centres[:, None] + offsets], axis=1)
            labels = torch.ones(points.shape[:2], dtype=torch.int)
            prompts = {"points": (torch.as_tensor(points * scale, dtype=torch.float32), labels), "boxes": None}
        sparse, dense = model.prompt_encoder(masks=None, **prompts)
        embedding = torch.randn(embedding_shape, generator=generator) * EMBEDDING_NOISE
        high_res = tuple(torch.randn((1, *shape), generator=generator) * EMBEDDING_NOISE
                         for shape in model.high_res_feature_shapes())
        logits, iou = model.mask_decoder(embedding, image_pe, sparse, dense, multimask_output=kind == 0,
                                         high_res_features=high_res)
        loss, _ = sam_loss(logits, iou, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ious.append(mask_iou(logits.detach(), targets[:, None].expand_as(logits)).amax(dim=1).mean().item())
    return float(np.mean(ious[-60:])) if ious else float("nan")
