"""The reference packages as the oracles of tests and benchmarks: the official
`segment-anything==1.0`, `segment-anything-hq==0.3` (`segment_anything_hq`),
`mobilesam-mirror==1.0.0` (`mobile_sam`) and `sam2==1.1.0` (`sam2`).

The official package imports torchvision at import time (its mask generator uses
`batched_nms`, its predictor resizes images with torchvision's PIL path), and PyPI's
torchvision does not install beside the CPU torch used here. When torchvision is missing,
`import_official()` registers a stand-in that does exactly what torchvision does for these
calls: `to_pil_image` of an (H, W, 3) uint8 array is `Image.fromarray`, `resize` of a PIL
image is `Image.resize((w, h), BILINEAR)`, and the box ops are the textbook greedy NMS.
The same goes for timm, which MobileSAM's TinyViT imports four helpers from and which imports
torchvision itself: `to_2tuple`, `trunc_normal_` (torch's), `register_model` (a registry
decorator; nothing here looks models up by name) and `DropPath` (stochastic depth, identity
in eval mode and at rate 0, the rate of every MobileSAM model).
SAM 2 uses three more of torchvision's transforms on tensors, scripted with `torch.jit.script`
as it scripts them: `ToTensor` of an (H, W, 3) uint8 array (to (3, H, W) float in [0, 1]),
`Resize` of a float tensor (torchvision's tensor path is `interpolate`, bilinear with
antialiasing) and `Normalize` (per channel, (x - mean) / std). Its mask clean-up calls a
compiled extension, `sam2._C.get_connected_componnets`, which pip does not build on a CPU-only
machine (SAM 2 then skips the clean-up with a warning); the stand-in labels the 8-connected
regions of each (N, 1, H, W) mask with SciPy and gives each pixel its region's label and area
(0 off the regions), as the extension does.
"""

import importlib
import sys
import types
from functools import partial
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F


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


class _ToTensor:
    def __call__(self, pic: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(pic)).permute(2, 0, 1).float().div(255)


class _Resize(torch.nn.Module):
    def __init__(self, size: Sequence[int]) -> None:
        super().__init__()
        self.size: List[int] = [int(s) for s in size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x.unsqueeze(0), size=self.size, mode="bilinear", align_corners=False,
                             antialias=True).squeeze(0)


class _Normalize(torch.nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.mean: List[float] = [float(m) for m in mean]
        self.std: List[float] = [float(s) for s in std]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - mean) / std


def _install_torchvision_stand_in() -> None:
    torchvision = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    boxes.batched_nms, boxes.box_area = _batched_nms, _box_area
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.to_pil_image = lambda pic: Image.fromarray(pic)
    functional.resize = lambda img, size: img.resize((size[1], size[0]), Image.BILINEAR)
    transforms.ToTensor, transforms.Resize, transforms.Normalize = _ToTensor, _Resize, _Normalize
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


class _DropPath(torch.nn.Module):
    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.drop_prob:
            return x
        keep = 1 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


def _install_timm_stand_in() -> None:
    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")
    layers.DropPath = _DropPath
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    layers.trunc_normal_ = torch.nn.init.trunc_normal_
    registry.register_model = lambda fn: fn
    timm.models, models.layers, models.registry = models, layers, registry
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers,
                        "timm.models.registry": registry})


def _connected_components(mask: torch.Tensor):
    """(N, 1, H, W) uint8 -> per pixel, the label and the area of its 8-connected region (int32)."""
    from scipy import ndimage

    labels = np.zeros(mask.shape, dtype=np.int32)
    areas = np.zeros(mask.shape, dtype=np.int32)
    for i, plane in enumerate(mask.cpu().numpy()[:, 0]):
        plane_labels, _ = ndimage.label(plane > 0, structure=np.ones((3, 3)))
        labels[i, 0] = plane_labels
        areas[i, 0] = np.bincount(plane_labels.ravel())[plane_labels] * (plane_labels > 0)
    return torch.from_numpy(labels), torch.from_numpy(areas)


def _install_sam2_extension_stand_in() -> None:
    extension = types.ModuleType("sam2._C")
    extension.get_connected_componnets = _connected_components
    sys.modules["sam2._C"] = extension
    importlib.import_module("sam2")._C = extension


def import_reference(name: str = "segment_anything"):
    """A reference package (`segment_anything`, `segment_anything_hq`, `mobile_sam` or `sam2`
    and its modules), importable with or without torchvision, timm and SAM 2's extension."""
    try:
        importlib.import_module("torchvision.transforms.functional")
    except Exception:
        _install_torchvision_stand_in()
    try:
        importlib.import_module("timm.models.layers")
    except Exception:
        _install_timm_stand_in()
    if name.split(".")[0] == "sam2":
        try:
            importlib.import_module("sam2._C")
        except ImportError:
            _install_sam2_extension_stand_in()
    return importlib.import_module(name)


def import_official():
    """The `segment_anything` module, importable with or without torchvision."""
    return import_reference("segment_anything")


# The reference package of each family (`SamConfig.family`).
REFERENCES = {"SAM": "segment_anything", "MobileSAM": "mobile_sam", "SAM-HQ": "segment_anything_hq", "SAM 2": "sam2"}


def _sam2_overrides(config) -> List[str]:
    """Hydra overrides that size SAM 2.1's tiny config as `config` (a hiera SamConfig)."""
    trunk = "++model.image_encoder.trunk."
    channels = [config.encoder_embed_dim * 2 ** i for i in range(4)][::-1]
    return [
        f"{trunk}embed_dim={config.encoder_embed_dim}",
        f"{trunk}num_heads={config.encoder_num_heads}",
        f"{trunk}stages={list(config.encoder_stage_depths)}",
        f"{trunk}global_att_blocks={list(config.encoder_global_attn_indexes)}",
        f"{trunk}window_pos_embed_bkg_spatial_size={list(config.encoder_pos_embed_size)}",
        f"{trunk}window_spec={list(config.encoder_stage_windows)}",
        f"++model.image_encoder.neck.backbone_channel_list={channels}",
    ]


def _build_sam2(config, checkpoint=None):
    """SAM 2's own `build_sam2` of `config`'s sizes (SAM 2.1's tiny config, resized), with SAM 2's
    defaults (the single-mask stability fallback on), on the CPU, in eval mode."""
    if (config.image_size, config.prompt_embed_dim) != (1024, 256):
        raise ValueError("SAM 2's reference builds 1024-pixel models with 256-wide decoders only")
    build_sam = import_reference("sam2.build_sam")
    return build_sam.build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None if checkpoint is None else str(checkpoint),
                                device="cpu", hydra_overrides_extra=_sam2_overrides(config))


def build_reference(config):
    """The reference `Sam` of a segany `SamConfig`'s family and sizes, built from that reference
    package's own classes, in eval mode (for SAM 2, its `SAM2Base`, video modules included)."""
    if config.family == "SAM 2":
        return _build_sam2(config)
    if config.family not in REFERENCES:
        raise ValueError(f"no reference package for the {config.family} family")
    modeling = import_reference(REFERENCES[config.family]).modeling
    grid = config.image_size // config.patch_size
    if config.encoder == "vit":
        image_encoder = modeling.ImageEncoderViT(
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
        )
        early_dim = config.encoder_embed_dim
    else:
        # The first stage is convolutional: its head count and window are not used.
        image_encoder = modeling.TinyViT(
            img_size=config.image_size,
            in_chans=3,
            num_classes=1000,
            embed_dims=list(config.encoder_stage_dims),
            depths=list(config.encoder_stage_depths),
            num_heads=[1, *config.encoder_stage_heads],
            window_sizes=[7, *config.encoder_stage_windows],
            mlp_ratio=config.encoder_mlp_ratio,
            drop_rate=0.0,
            drop_path_rate=0.0,
            mbconv_expand_ratio=config.encoder_mlp_ratio,
        )
        early_dim = config.encoder_stage_dims[2]
    decoder_class, decoder_options = modeling.MaskDecoder, {}
    if config.decoder == "hq":
        decoder_class, decoder_options = modeling.MaskDecoderHQ, {"vit_dim": early_dim}
    model = modeling.Sam(
        image_encoder=image_encoder,
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=decoder_class(
            **decoder_options,
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=modeling.TwoWayTransformer(
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


def load_reference(config, checkpoint: Path):
    """`build_reference(config)` with the weights of a reference-layout checkpoint.

    `eval()` again after loading: TinyViT caches its attention biases when switched to eval mode,
    and the reference builders switch before they load, which leaves the cache of the random
    initialisation (their released weights are loaded the same way, so the cache is refreshed
    by any later `eval()` or `train()` call, as their predictors never make).
    """
    if config.family == "SAM 2":
        return _build_sam2(config, checkpoint)
    model = build_reference(config)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    return model.eval()


def reference_predictor(config, checkpoint: Path):
    """The reference package's own image predictor over `load_reference(config, checkpoint)`:
    `SamPredictor`, or for SAM 2 its `SAM2ImagePredictor`."""
    model = load_reference(config, checkpoint)
    if config.family == "SAM 2":
        return import_reference("sam2.sam2_image_predictor").SAM2ImagePredictor(model)
    return import_reference(REFERENCES[config.family]).SamPredictor(model)


def random_reference_state_dict(config, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Reference-layout weights: PyTorch's default init plus noise on every float tensor.

    The noise makes the zero-initialised tables (position embeddings, relative position
    biases) and the unit norm scales non-trivial, so every parameter is exercised. Batch-norm
    variances stay positive; integer counters stay as they are.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        state_dict = build_reference(config).state_dict()
        generator = torch.Generator().manual_seed(seed + 1)
        noisy = {}
        for name, value in state_dict.items():
            if value.is_floating_point():
                value = value + 0.02 * torch.randn(value.shape, generator=generator)
                if name.endswith("running_var"):
                    value = value.abs() + 0.5
            noisy[name] = value
        return noisy


def write_reference_checkpoint(config, path: Path, seed: int = 0) -> Path:
    """Save random reference-layout weights as a `.pth`, as the released checkpoints are saved
    (SAM 2's under "model")."""
    state_dict = random_reference_state_dict(config, seed)
    torch.save({"model": state_dict} if config.family == "SAM 2" else state_dict, path)
    return path
