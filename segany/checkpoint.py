"""Reading, checking, converting and saving model weights.

Two formats are read: released checkpoints (a pickled state dict: `sam_vit_*.pth`, MobileSAM's,
SAM-HQ's, and SAM 2's `sam2.1_hiera_*.pt` with the state dict under "model") and our
`.safetensors` files, which carry the model config in their metadata. The architecture of a
state dict without a config is worked out from its tensor shapes.

SAM 2's checkpoints name the prompt encoder and decoder `sam_prompt_encoder` and
`sam_mask_decoder`; they are renamed on reading (`from_sam2_layout`) and back on writing a
`.pt`. Their video memory modules (`SAM2_VIDEO_MODULES`) are read and kept beside the model's
tensors, so conversions carry them, but no model uses them: segany segments images.
"""

import json
import math
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import CheckpointError, SegAnyError
from .fileio import atomic_path
from .modeling import CONFIGS, Sam, SamConfig, build_sam, config_name, get_config

StateDict = Dict[str, torch.Tensor]
PathLike = Union[str, Path]

SAFETENSORS_FORMAT = "segany"

# The released checkpoints of each family, found by name in `weights_dir()` (they cannot be
# bundled): name -> (architecture, file name, where to download it).
_META = "https://dl.fbaipublicfiles.com/segment_anything/"
_SAM_HQ = "https://huggingface.co/lkeab/hq-sam/resolve/main/"
OFFICIAL_CHECKPOINTS: Dict[str, Tuple[str, str, str]] = {
    "sam_vit_h": ("vit_h", "sam_vit_h_4b8939.pth", _META),
    "sam_vit_l": ("vit_l", "sam_vit_l_0b3195.pth", _META),
    "sam_vit_b": ("vit_b", "sam_vit_b_01ec64.pth", _META),
    "mobile_sam": ("vit_t", "mobile_sam.pt", "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/"),
    "sam_hq_vit_h": ("hq_vit_h", "sam_hq_vit_h.pth", _SAM_HQ),
    "sam_hq_vit_l": ("hq_vit_l", "sam_hq_vit_l.pth", _SAM_HQ),
    "sam_hq_vit_b": ("hq_vit_b", "sam_hq_vit_b.pth", _SAM_HQ),
    "sam_hq_vit_tiny": ("hq_vit_t", "sam_hq_vit_tiny.pth", _SAM_HQ),
    **{f"sam2.1_hiera_{size}": (arch, f"sam2.1_hiera_{size}.pt", "https://dl.fbaipublicfiles.com/segment_anything_2/092824/")
       for size, arch in (("tiny", "hiera_t"), ("small", "hiera_s"), ("base_plus", "hiera_b+"), ("large", "hiera_l"))},
}

# Top-level modules of SAM 2's checkpoints that serve video tracking only.
SAM2_VIDEO_MODULES = ("memory_attention", "memory_encoder", "maskmem_tpos_enc", "mask_downsample", "no_mem_pos_enc",
                      "no_obj_embed_spatial", "no_obj_ptr", "obj_ptr_proj", "obj_ptr_tpos_proj")
# SAM 2 name prefix -> ours.
_SAM2_PREFIXES = (("sam_prompt_encoder.", "prompt_encoder."), ("sam_mask_decoder.", "mask_decoder."),
                  ("no_mem_embed", "image_encoder.no_mem_embed"))
# SAM 2's two-way transformer calls its feed-forward layers mlp.layers.0/1, SAM's mlp.lin1/2.
_SAM2_MLP = re.compile(r"^(mask_decoder\.transformer\.layers\.\d+\.mlp\.)layers\.([01])\.")
_SAM_MLP = re.compile(r"^(sam_mask_decoder\.transformer\.layers\.\d+\.mlp\.)lin([12])\.")


def is_video_memory(key: str) -> bool:
    """Whether a state-dict key belongs to SAM 2's video memory modules."""
    return key.split(".")[0] in SAM2_VIDEO_MODULES


def from_sam2_layout(state_dict: StateDict) -> StateDict:
    """SAM 2's checkpoint names -> ours (video memory keys unchanged), same tensors, same order."""
    return _renamed(state_dict, _SAM2_PREFIXES, _SAM2_MLP, lambda m: f"{m.group(1)}lin{int(m.group(2)) + 1}.")


def to_sam2_layout(state_dict: StateDict) -> StateDict:
    """Inverse of `from_sam2_layout`."""
    prefixes = tuple((ours, theirs) for theirs, ours in _SAM2_PREFIXES)
    return _renamed(state_dict, prefixes, _SAM_MLP, lambda m: f"{m.group(1)}layers.{int(m.group(2)) - 1}.")


def _renamed(state_dict: StateDict, prefixes: Tuple[Tuple[str, str], ...], mlp: "re.Pattern[str]",
             mlp_name: Callable[["re.Match[str]"], str]) -> StateDict:
    """Keys with the first of the (old, new) `prefixes` they start with replaced, then `mlp`
    matches rewritten by `mlp_name`; same tensors, same order."""
    renamed = {}
    for key, value in state_dict.items():
        old, new = next(((a, b) for a, b in prefixes if key.startswith(a)), ("", ""))
        renamed[mlp.sub(mlp_name, new + key[len(old):])] = value
    return renamed


def split_video_memory(state_dict: StateDict) -> Tuple[StateDict, StateDict]:
    """(the image model's tensors, SAM 2's video memory tensors)."""
    video = {k: v for k, v in state_dict.items() if is_video_memory(k)}
    return {k: v for k, v in state_dict.items() if k not in video}, video

# Models that ship inside the package (docs/models.md describes them).
BUNDLED_MODELS: Dict[str, Path] = {"default": Path(__file__).parent / "weights" / "default.safetensors"}
DEFAULT_MODEL = "default"
MODEL_NAMES = [*BUNDLED_MODELS, *OFFICIAL_CHECKPOINTS]


def weights_dir() -> Path:
    """Folder searched for named weights: $SEGANY_WEIGHTS, else ~/.cache/segany."""
    return Path(os.environ.get("SEGANY_WEIGHTS", Path.home() / ".cache" / "segany"))


def resolve_source(source: PathLike) -> Path:
    """A checkpoint path, or the file that a registered name stands for."""
    path = Path(source)
    if path.exists():
        return path
    if str(source) in BUNDLED_MODELS:
        return BUNDLED_MODELS[str(source)]
    if str(source) not in OFFICIAL_CHECKPOINTS:
        return path
    _, filename, url = OFFICIAL_CHECKPOINTS[str(source)]
    located = weights_dir() / filename
    if not located.exists():
        raise CheckpointError(
            f"{source}: {filename} is not in {weights_dir()} (set SEGANY_WEIGHTS); "
            f"download it from {url}{filename}"
        )
    return located


def _describe_keys(keys, limit: int = 5) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def _unwrap(obj: object, path: Path) -> StateDict:
    """The state dict inside a loaded object: plain, under 'model'/'state_dict', or DDP-prefixed."""
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: not a checkpoint (expected a state dict, found {type(obj).__name__})")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: not a state dict: non-tensor entries {_describe_keys(map(str, not_tensors))}")
    return {re.sub(r"^module\.", "", k): v for k, v in obj.items()}


def load_tensor_pickle(path: Path, what: str = "checkpoint") -> Any:
    """`torch.load(path, weights_only=True)`: tensors and plain values only; any failure is one
    CheckpointError line naming the file as a `what`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0]
        if "weights_only" in str(err) or "Unsupported" in str(err):
            reason = "it holds Python objects other than tensors, refused for safety"
        raise CheckpointError(f"{path}: not a readable {what} ({reason})") from None
    except Exception as err:  # torch.load fails in many ways on bytes that are not a checkpoint
        message = str(err).strip().split(". ")[0] if str(err).strip() else type(err).__name__
        if isinstance(err, (EOFError, zipfile.BadZipFile)) or "central directory" in message:
            raise CheckpointError(f"{path}: truncated or corrupt {what} ({message})") from None
        raise CheckpointError(f"{path}: not a {what} ({type(err).__name__}: {message})") from None


def read_checkpoint(source: PathLike) -> Tuple[StateDict, Optional[SamConfig]]:
    """Tensors of a checkpoint file, and the config stored with them if any."""
    path = resolve_source(source)
    if not path.exists():
        hint = "" if path.suffix else f" (nor a registered name: {', '.join(OFFICIAL_CHECKPOINTS)})"
        raise CheckpointError(f"checkpoint not found: {path}{hint}")
    if not path.is_file():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    with open(path, "rb") as f:
        head = f.read(9)
    if not head:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    # safetensors: 8-byte little-endian header length, then a JSON header.
    if len(head) == 9 and head[8:9] == b"{":
        return _read_safetensors(path)
    # PyTorch writes zip archives; older versions wrote a bare pickle (protocol >= 2).
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        raise CheckpointError(f"{path}: not a checkpoint (neither a PyTorch .pth nor a .safetensors file)")
    state_dict = _unwrap(load_tensor_pickle(path), path)
    if any(key.startswith("sam_mask_decoder.") or is_video_memory(key) for key in state_dict):
        state_dict = from_sam2_layout(state_dict)
    return state_dict, None


def _read_safetensors(path: Path) -> Tuple[StateDict, Optional[SamConfig]]:
    try:
        tensors = load_file(path)
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({err})") from None
    config = None
    if "config" in metadata:
        try:
            config = SamConfig.from_dict(json.loads(metadata["config"]))
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{path}: bad model config in metadata ({err})") from None
    return _unwrap(tensors, path), config


def detect_config(state_dict: StateDict, source: PathLike = "state dict") -> SamConfig:
    """Work out the architecture of a SAM, MobileSAM or SAM-HQ state dict from its keys and shapes.

    Decoder head count is not visible in shapes; it is taken as the official 8. TinyViT's input
    size is not in its shapes either: it is taken as MobileSAM's 1024. A MobileNetV2 encoder's
    input size and stride are not in its shapes: such models live in .safetensors files, whose
    metadata holds the config.
    """
    image_part, video = split_video_memory(state_dict)
    if video and not image_part:
        raise CheckpointError(f"{source}: holds only SAM 2's video memory modules "
                              f"({', '.join(sorted({k.split('.')[0] for k in video}))}), no image encoder or decoder")
    if "image_encoder.trunk.stem.weight" in state_dict:
        raise CheckpointError(
            f"{source}: a MobileNetV2-encoder model without its config (its input size is not in the "
            "tensors); load the .safetensors file it was saved as"
        )

    def get(key: str) -> torch.Tensor:
        if key not in state_dict:
            raise CheckpointError(
                f"{source}: not a SAM checkpoint: missing key {key} (found {_describe_keys(state_dict)})"
            )
        return state_dict[key]

    def count(pattern: str) -> int:
        indexes = {int(m.group(1)) for k in state_dict if (m := re.match(pattern, k))}
        return max(indexes) + 1 if indexes else 0

    if "image_encoder.layers.0.blocks.0.conv1.c.weight" in state_dict:
        encoder = _tiny_vit_fields(get, count)
    elif "image_encoder.trunk.patch_embed.proj.weight" in state_dict:
        encoder = _hiera_fields(get, count, state_dict, source)
    else:
        encoder = _vit_fields(get, count)
    prompt_dim = get("prompt_encoder.not_a_point_embed.weight").shape[1]
    attn_width = get("mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight").shape[0]
    return SamConfig(
        **encoder,
        decoder=decoder_of(state_dict),
        prompt_embed_dim=prompt_dim,
        mask_in_chans=get("prompt_encoder.mask_downscaling.3.weight").shape[0],
        decoder_depth=count(r"mask_decoder\.transformer\.layers\.(\d+)\."),
        decoder_mlp_dim=get("mask_decoder.transformer.layers.0.mlp.lin1.weight").shape[0],
        decoder_attention_downsample_rate=prompt_dim // attn_width,
        num_multimask_outputs=get("mask_decoder.mask_tokens.weight").shape[0] - 1,
        iou_head_depth=count(r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\."),
        iou_head_hidden_dim=get("mask_decoder.iou_prediction_head.layers.0.weight").shape[0],
    )


def _vit_fields(get: Callable[[str], torch.Tensor], count: Callable[[str], int]) -> Dict[str, Any]:
    """SamConfig fields of a ViT image encoder (SAM, SAM-HQ)."""
    enc = "image_encoder."
    patch = get(enc + "patch_embed.proj.weight")  # C, 3, p, p
    embed_dim, patch_size = patch.shape[0], patch.shape[2]
    grid = get(enc + "pos_embed").shape[1]
    depth = count(r"image_encoder\.blocks\.(\d+)\.")
    rel_pos_lengths = [get(f"{enc}blocks.{i}.attn.rel_pos_h").shape[0] for i in range(depth)]
    head_dim = get(enc + "blocks.0.attn.rel_pos_h").shape[1]
    windowed = [n for n in rel_pos_lengths if n != 2 * grid - 1]
    return dict(
        encoder_embed_dim=embed_dim,
        encoder_depth=depth,
        encoder_num_heads=embed_dim // head_dim,
        encoder_global_attn_indexes=tuple(i for i, n in enumerate(rel_pos_lengths) if n == 2 * grid - 1),
        encoder_mlp_ratio=get(enc + "blocks.0.mlp.lin1.weight").shape[0] / embed_dim,
        encoder_window_size=(windowed[0] + 1) // 2 if windowed else 0,
        image_size=grid * patch_size,
        patch_size=patch_size,
    )


def _tiny_vit_fields(get: Callable[[str], torch.Tensor], count: Callable[[str], int]) -> Dict[str, Any]:
    """SamConfig fields of a TinyViT image encoder (MobileSAM): per stage its width (from the
    first block) and block count, per attention stage its heads and window side (the
    attention-bias table of a ws x ws window has ws^2 offsets per head)."""
    layers = "image_encoder.layers"
    dims = [get(f"{layers}.0.blocks.0.conv1.c.weight").shape[1]]
    heads, windows = [], []
    for i in range(1, 4):
        biases = get(f"{layers}.{i}.blocks.0.attn.attention_biases")  # heads, ws^2
        dims.append(get(f"{layers}.{i}.blocks.0.attn.qkv.weight").shape[1])
        heads.append(biases.shape[0])
        windows.append(math.isqrt(biases.shape[1]))
    return dict(
        encoder="tiny_vit",
        encoder_stage_dims=tuple(dims),
        encoder_stage_depths=tuple(count(rf"image_encoder\.layers\.{i}\.blocks\.(\d+)\.") for i in range(4)),
        encoder_stage_heads=tuple(heads),
        encoder_stage_windows=tuple(windows),
        encoder_mlp_ratio=get(f"{layers}.1.blocks.0.mlp.fc1.weight").shape[0] / dims[1],
        image_size=1024,
        patch_size=16,
    )


def _hiera_fields(get: Callable[[str], torch.Tensor], count: Callable[[str], int], state_dict: StateDict,
                  source: PathLike) -> Dict[str, Any]:
    """SamConfig fields of a Hiera image encoder (SAM 2). Width, stage depths (a stage starts with
    the block that has a `proj`), the first window and the position-embedding grid are in the
    shapes; head counts, the other windows and the global-attention blocks are not: they are
    those of the released model of the same width and depths (`CONFIGS` hiera_*)."""
    trunk = "image_encoder.trunk."
    embed_dim = get(trunk + "patch_embed.proj.weight").shape[0]
    depth = count(r"image_encoder\.trunk\.blocks\.(\d+)\.")
    starts = [i for i in range(depth) if f"{trunk}blocks.{i}.proj.weight" in state_dict]
    bounds = [0, *starts, depth]
    depths = tuple(b - a for a, b in zip(bounds[:-1], bounds[1:]))
    released = [c for c in CONFIGS.values() if c.encoder == "hiera" and (c.encoder_embed_dim, c.encoder_stage_depths)
                == (embed_dim, depths)]
    if not released:
        raise CheckpointError(f"{source}: a SAM 2 model of width {embed_dim} and stage depths {list(depths)} is none of "
                              "the released sizes, and its heads and global-attention blocks are not in its tensors; "
                              "load the .safetensors it was saved as")
    fields = {name: getattr(released[0], name) for name in ("encoder_num_heads", "encoder_global_attn_indexes",
                                                            "encoder_stage_windows")}
    window = get(trunk + "pos_embed_window").shape[-1]
    fields["encoder_stage_windows"] = (window, *fields["encoder_stage_windows"][1:])
    return dict(
        encoder="hiera",
        encoder_embed_dim=embed_dim,
        encoder_stage_depths=depths,
        encoder_pos_embed_size=tuple(get(trunk + "pos_embed").shape[2:]),
        encoder_mlp_ratio=get(trunk + "blocks.0.mlp.layers.0.weight").shape[0] / embed_dim,
        image_size=1024,
        patch_size=16,
        **fields,
    )


def check_state_dict(model: torch.nn.Module, state_dict: StateDict, source: PathLike = "state dict") -> None:
    """Raise CheckpointError unless `state_dict` has exactly the model's keys and shapes, floats
    where the model has floats, and no NaN or infinity."""
    expected = model.state_dict()
    missing = expected.keys() - state_dict.keys()
    unexpected = state_dict.keys() - expected.keys()
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe_keys(unexpected)}")
    mismatched = [key for key in sorted(expected.keys() & state_dict.keys())
                  if expected[key].shape != state_dict[key].shape]
    if mismatched:
        problems.append("shape mismatch for " + ", ".join(
            f"{key} (checkpoint {tuple(state_dict[key].shape)}, model {tuple(expected[key].shape)})"
            for key in mismatched[:3]) + (f", ... ({len(mismatched)} in all)" if len(mismatched) > 3 else ""))
    if problems:
        raise CheckpointError(f"{source}: does not fit the model: " + "; ".join(problems))
    for key, tensor in state_dict.items():
        if expected[key].is_floating_point() and not tensor.is_floating_point():
            raise CheckpointError(f"{source}: {key} holds {tensor.dtype} values where the model has floats")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{source}: {key} holds NaN or infinite values")


def read_checked(source: PathLike, config: Optional[SamConfig] = None) -> Tuple[StateDict, SamConfig, Path]:
    """A checkpoint's tensors and config, checked to build a model: keys, shapes, dtypes, finite
    values. Returns them (with SAM 2's video memory tensors, unchecked) and the file's path.

    config: the architecture, for state dicts that carry none and whose shapes do not tell it all.
    """
    path = resolve_source(source)
    state_dict, stored = read_checkpoint(path)
    config = config or stored or detect_config(state_dict, path)
    with torch.device("meta"):
        reference = build_sam(config)
    image_part, _ = split_video_memory(state_dict) if config.decoder == "sam2" else (state_dict, {})
    check_state_dict(reference, image_part, path)
    return state_dict, config, path


def decoder_of(state_dict: StateDict) -> str:
    """`SamConfig.decoder` of a state dict: "hq" where SAM-HQ's output token is present, "sam2"
    where SAM 2's object-score token is, "high_res" where only its high-resolution projections are."""
    if "mask_decoder.obj_score_token.weight" in state_dict:
        return "sam2"
    if "mask_decoder.conv_s0.weight" in state_dict:
        return "high_res"
    return "hq" if "mask_decoder.hf_token.weight" in state_dict else "sam"


def resolve_device(device: Union[str, torch.device]) -> torch.device:
    """A torch device that exists on this machine, or a SegAnyError saying why not."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise SegAnyError(f"unknown device {device!r} (e.g. cpu, cuda, cuda:1, mps)") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise SegAnyError(f"device {device}: CUDA is not available on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise SegAnyError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise SegAnyError(f"device {device}: MPS is not available on this machine")
    elif resolved.type not in ("cpu", "cuda", "mps", "meta"):
        raise SegAnyError(f"device {device}: not supported (use cpu, cuda or mps)")
    return resolved


def load_model(source: PathLike, device: Union[str, torch.device] = "cpu", config: Optional[SamConfig] = None) -> Sam:
    """A ready `Sam` (eval mode) from a checkpoint path or a registered name.

    source: a released checkpoint (`sam_vit_b_01ec64.pth`, `mobile_sam.pt`, `sam_hq_vit_*.pth`,
    `sam2.1_hiera_*.pt`, ... or any state dict of those layouts), one of our `.safetensors`
    files, "default" (the bundled model) or a name in `OFFICIAL_CHECKPOINTS`.
    config: the architecture, where the file carries none and its shapes do not tell it all
    (SAM 2 models of other sizes than the released ones).
    """
    device = resolve_device(device)
    state_dict, config, _ = read_checked(source, config)
    state_dict, _ = split_video_memory(state_dict)
    with torch.device("meta"):
        model = build_sam(config)
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    model.load_state_dict(state_dict, assign=True)
    # Non-persistent buffers were created on the meta device: rebuild them.
    model.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), False)
    model.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), False)
    return model.to(device).eval()


def save_model(model: Sam, path: PathLike) -> None:
    """Write `model` as .safetensors (config in metadata) or as an official-layout .pth."""
    write_checkpoint(model.state_dict(), path, model.config)


def write_checkpoint(state_dict: StateDict, path: PathLike, config: Optional[SamConfig]) -> None:
    """Write tensors unchanged to `path`, atomically; the format follows the suffix."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if config is None:
            raise CheckpointError(f"{path}: a .safetensors checkpoint needs the model config")
        metadata = {"format": SAFETENSORS_FORMAT, "config": json.dumps(config.to_dict()), "name": config_name(config)}
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata=metadata)
    elif path.suffix in (".pth", ".pt"):
        if config is not None and not _detected_as(state_dict, config):
            raise CheckpointError(f"{path}: the .pth layout holds no config, and this {config.family} model's "
                                  "cannot be read back from its shapes; use .safetensors")
        tensors = {k: v.detach().cpu() for k, v in state_dict.items()}
        if config is not None and config.decoder == "sam2":  # SAM 2's own layout
            tensors = {"model": to_sam2_layout(tensors)}
        with atomic_path(path) as tmp:
            torch.save(tensors, tmp)
    else:
        raise CheckpointError(f"{path}: unknown checkpoint suffix {path.suffix!r} (use .safetensors or .pth)")


def _detected_as(state_dict: StateDict, config: SamConfig) -> bool:
    """Whether `detect_config` reads `config` back from these tensors."""
    try:
        return detect_config(state_dict) == config
    except CheckpointError:
        return False


def convert_checkpoint(source: PathLike, destination: PathLike, config: Optional[SamConfig] = None) -> SamConfig:
    """Convert between released .pth/.pt and our .safetensors; tensors are copied bit for bit
    (SAM 2's video memory modules too).

    Keys are written in the model's own order, the order of the official checkpoints; config
    as in `load_model`.
    """
    state_dict, config, _ = read_checked(source, config)
    with torch.device("meta"):
        reference = build_sam(config)
    ordered = {key: state_dict[key] for key in reference.state_dict()}
    ordered.update((key, value) for key, value in state_dict.items() if key not in ordered)  # SAM 2's video memory
    write_checkpoint(ordered, destination, config)
    return config


def random_model(config: Union[str, SamConfig], seed: int = 0) -> Sam:
    """A model with PyTorch's default random initialisation, reproducible from `seed`."""
    config = get_config(config) if isinstance(config, str) else config
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_sam(config)
