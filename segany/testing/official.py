"""The official `segment-anything==1.0` package as the oracle of tests and benchmarks.

The official package imports torchvision at import time (its mask generator uses
`batched_nms`, its predictor resizes images with torchvision's PIL path), and PyPI's
torchvision does not install beside the CPU torch used here. When torchvision is missing,
`import_official()` registers a stand-in that does exactly what torchvision does for these
calls: `to_pil_image` of an (H, W, 3) uint8 array is `Image.fromarray`, `resize` of a PIL
image is `Image.resize((w, h), BILINEAR)`, and the box ops are the textbook greedy NMS.
"""

import importlib
import sys
import types
from functools import partial
from pathlib import Path
from typing import Dict

import torch
from PIL import Image


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    order = scores.argsort(descending=True)
    keep = []
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    areas = _box_area(boxes)
    for position, i in enumerate(order.tolist()):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[position + 1 :]
        lt = torch.maximum(boxes[i, :2], boxes[rest, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=1)
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou > iou_threshold]] = True
    return torch.tensor(keep, dtype=torch.long)


def _batched_nms(boxes, scores, idxs, iou_threshold):
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64)
    # Shift each category into its own region so boxes of different categories never overlap.
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return _nms(boxes + offsets[:, None], scores, iou_threshold)


def _install_torchvision_stand_in() -> None:
    torchvision = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    boxes.batched_nms, boxes.box_area = _batched_nms, _box_area
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.to_pil_image = lambda pic: Image.fromarray(pic)
    functional.resize = lambda img, size: img.resize((size[1], size[0]), Image.BILINEAR)
    torchvision.ops, ops.boxes, torchvision.transforms, transforms.functional = ops, boxes, transforms, functional
    sys.modules.update(
        {
            "torchvision": torchvision,
            "torchvision.ops": ops,
            "torchvision.ops.boxes": boxes,
            "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional,
        }
    )


def import_official():
    """The `segment_anything` module, importable with or without torchvision."""
    try:
        importlib.import_module("torchvision.transforms.functional")
    except Exception:
        _install_torchvision_stand_in()
    return importlib.import_module("segment_anything")


def build_official(config):
    """An official `Sam` with the sizes of a segany `SamConfig`, from the official classes."""
    import_official()
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    grid = config.image_size // config.patch_size
    model = Sam(
        image_encoder=ImageEncoderViT(
            depth=config.encoder_depth,
            embed_dim=config.encoder_embed_dim,
            img_size=config.image_size,
            mlp_ratio=config.encoder_mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=config.encoder_num_heads,
            patch_size=config.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=config.encoder_global_attn_indexes,
            window_size=config.encoder_window_size,
            out_chans=config.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
    )
    return model.eval()


def random_official_state_dict(config, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Official-layout weights: PyTorch's default init plus noise on every tensor.

    The noise makes the zero-initialised tables (position embeddings, relative position
    biases) and the unit LayerNorm scales non-trivial, so every parameter is exercised.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        state_dict = build_official(config).state_dict()
        generator = torch.Generator().manual_seed(seed + 1)
        return {k: v + 0.02 * torch.randn(v.shape, generator=generator) for k, v in state_dict.items()}


def write_official_checkpoint(config, path: Path, seed: int = 0) -> Path:
    """Save random official-layout weights as a `.pth`, as Meta's checkpoints are saved."""
    torch.save(random_official_state_dict(config, seed), path)
    return path
