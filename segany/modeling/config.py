"""Model configurations and the builder that turns one into a `Sam`.

The image encoder is a plug-in: `SamConfig.encoder` names an entry of `ENCODERS`, a function
that builds it from the config; `SamConfig.decoder` names the mask decoder ("sam"; "hq" for
SAM-HQ's, which also reads the encoder's early features; "sam2" for SAM 2's, which reads its
high-resolution features). The prompt encoder is SAM's for all.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

from torch import nn

from ..errors import SegAnyError
from ..validation import check_field_types, check_number

from .hiera import ImageEncoderHiera
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .mask_decoder_hq import MaskDecoderHQ
from .mask_decoder_sam2 import MaskDecoderSAM2
from .mobilenet import ImageEncoderMobileNet
from .prompt_encoder import PromptEncoder
from .sam import PIXEL_MEAN, PIXEL_STD, Sam
from .tiny_vit import ImageEncoderTinyViT
from .transformer import TwoWayTransformer


@dataclass(frozen=True)
class SamConfig:
    """Every size of a SAM model. Defaults are those of the official models.

    encoder: "vit" (the official encoder; the encoder_* fields size it), "tiny_vit"
    (MobileSAM's; encoder_stage_dims and _depths size its 4 stages, encoder_stage_heads and
    _windows its 3 attention stages, encoder_mlp_ratio its MLPs and MBConv expansion),
    "hiera" (SAM 2's; encoder_embed_dim and encoder_num_heads at the first of its 4 stages,
    doubled at each next one, encoder_stage_depths and _windows per stage, global attention in
    encoder_global_attn_indexes, a position-embedding grid of encoder_pos_embed_size) or
    "mobilenet_v2" (`ImageEncoderMobileNet`; its output stride is patch_size). patch_size:
    input pixels per embedding cell, so the embedding grid is image_size // patch_size.
    decoder: "sam", "hq" (SAM-HQ), "sam2" (SAM 2, with a hiera encoder) or "high_res" (SAM's
    with SAM 2's high-resolution features, from a mobilenet_v2 encoder at output stride 16).
    """

    encoder: str = "vit"
    decoder: str = "sam"
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: Tuple[int, ...] = (2, 5, 8, 11)
    encoder_mlp_ratio: float = 4.0
    encoder_window_size: int = 14
    encoder_stage_dims: Tuple[int, ...] = ()
    encoder_stage_depths: Tuple[int, ...] = ()
    encoder_stage_heads: Tuple[int, ...] = ()
    encoder_stage_windows: Tuple[int, ...] = ()
    encoder_pos_embed_size: Tuple[int, ...] = ()
    image_size: int = 1024
    patch_size: int = 16
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    decoder_attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    pixel_mean: Tuple[float, float, float] = PIXEL_MEAN
    pixel_std: Tuple[float, float, float] = PIXEL_STD

    @property
    def family(self) -> str:
        """The model family, as users name it."""
        if self.decoder == "hq":
            return "SAM-HQ"
        if self.decoder == "sam2":
            return "SAM 2"
        return {"vit": "SAM", "tiny_vit": "MobileSAM", "mobilenet_v2": "segany"}[self.encoder]

    @property
    def resize(self) -> str:
        """How images become the model's square input: "longest_side" (SAM: scaled to image_size
        on the long side, padded) or "square" (SAM 2: stretched to image_size x image_size)."""
        return "square" if self.decoder == "sam2" else "longest_side"

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for SAM)."""
        return self.image_size // self.patch_size

    def __post_init__(self) -> None:
        check_field_types(self, "model config")
        if self.encoder not in ENCODERS:
            raise SegAnyError(f"unknown encoder {self.encoder!r}; known: {', '.join(ENCODERS)}")
        if self.decoder not in DECODERS:
            raise SegAnyError(f"unknown decoder {self.decoder!r}; known: {', '.join(DECODERS)}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int) and not isinstance(value, bool):
                # every size at least 1; a window of 0 means global attention in every block
                check_number(f"model config: {field.name}", value, low=0 if field.name == "encoder_window_size" else 1)
        check_number("model config: encoder_mlp_ratio", self.encoder_mlp_ratio, low=0, low_open=True)
        if self.encoder == "vit":
            for index in self.encoder_global_attn_indexes:
                check_number("model config: encoder_global_attn_indexes", index, integer=True, low=0,
                             high=self.encoder_depth - 1)
        for name, std in zip("RGB", self.pixel_std):
            check_number(f"model config: pixel_std ({name})", std, low=0, low_open=True)
        if self.image_size % self.patch_size:
            raise SegAnyError(f"model config: image_size {self.image_size} is not a multiple of patch_size "
                              f"{self.patch_size}")
        if self.prompt_embed_dim % self.decoder_num_heads:
            raise SegAnyError(f"model config: prompt_embed_dim {self.prompt_embed_dim} is not a multiple of "
                              f"decoder_num_heads {self.decoder_num_heads}")
        if self.encoder == "vit" and self.encoder_embed_dim % self.encoder_num_heads:
            raise SegAnyError(f"model config: encoder_embed_dim {self.encoder_embed_dim} is not a multiple of "
                              f"encoder_num_heads {self.encoder_num_heads}")
        if self.encoder == "mobilenet_v2" and self.patch_size not in (8, 16, 32):
            raise SegAnyError(f"model config: a mobilenet_v2 encoder's patch_size (output stride) must be "
                              f"8, 16 or 32, got {self.patch_size}")
        if self.encoder == "tiny_vit":
            self._check_tiny_vit()
        if self.encoder == "hiera":
            self._check_hiera()
        if (self.encoder == "hiera") != (self.decoder == "sam2"):
            raise SegAnyError(f"model config: the sam2 decoder and the hiera encoder go together, "
                              f"got encoder {self.encoder} with decoder {self.decoder}")
        if self.decoder == "high_res" and (self.encoder, self.patch_size) != ("mobilenet_v2", 16):
            raise SegAnyError(f"model config: the high_res decoder needs a mobilenet_v2 encoder at patch_size 16, "
                              f"not {self.encoder} at {self.patch_size}")
        if self.decoder == "hq" and self.encoder not in ("vit", "tiny_vit"):
            raise SegAnyError(f"model config: the hq decoder needs a vit or tiny_vit encoder, not {self.encoder}")
        if self.decoder == "hq" and self.encoder == "vit" and (not self.encoder_global_attn_indexes
                                                               and self.encoder_window_size):
            raise SegAnyError("model config: the hq decoder reads the first global-attention block of the ViT, "
                              "and this one has none")

    def _check_tiny_vit(self) -> None:
        stages = {"encoder_stage_dims": (self.encoder_stage_dims, 4),
                  "encoder_stage_depths": (self.encoder_stage_depths, 4),
                  "encoder_stage_heads": (self.encoder_stage_heads, 3),
                  "encoder_stage_windows": (self.encoder_stage_windows, 3)}
        for name, (values, length) in stages.items():
            if len(values) != length:
                raise SegAnyError(f"model config: a tiny_vit encoder needs {length} {name}, got {list(values)}")
            for value in values:
                check_number(f"model config: {name}", value, integer=True, low=1)
        for i, (dim, heads) in enumerate(zip(self.encoder_stage_dims[1:], self.encoder_stage_heads), 1):
            if dim % heads:
                raise SegAnyError(f"model config: encoder_stage_dims[{i}] {dim} is not a multiple of "
                                  f"encoder_stage_heads[{i - 1}] {heads}")
        if self.encoder_stage_dims[0] % 2:
            raise SegAnyError(f"model config: encoder_stage_dims[0] must be even, got {self.encoder_stage_dims[0]}")
        if self.patch_size != 16:
            raise SegAnyError(f"model config: a tiny_vit encoder has output stride 16; patch_size must be 16, "
                              f"got {self.patch_size}")

    def _check_hiera(self) -> None:
        for name, length in (("encoder_stage_depths", 4), ("encoder_stage_windows", 4),
                             ("encoder_pos_embed_size", 2)):
            values = getattr(self, name)
            if len(values) != length:
                raise SegAnyError(f"model config: a hiera encoder needs {length} {name}, got {list(values)}")
            for value in values:
                check_number(f"model config: {name}", value, integer=True, low=1)
        for index in self.encoder_global_attn_indexes:
            check_number("model config: encoder_global_attn_indexes", index, integer=True, low=0,
                         high=sum(self.encoder_stage_depths) - 1)
        starts = {sum(self.encoder_stage_depths[:i]) for i in range(1, 4)}
        if starts & set(self.encoder_global_attn_indexes):
            raise SegAnyError(f"model config: a hiera stage's first block (blocks {sorted(starts)}) pools inside its "
                              "window and cannot be a global-attention block")
        for stage in range(3):  # the first block of the next stage halves the window
            if self.encoder_stage_windows[stage] % 2:
                raise SegAnyError(f"model config: encoder_stage_windows[{stage}] must be even (the next stage pools "
                                  f"it 2x2), got {self.encoder_stage_windows[stage]}")
        grid = self.image_size // 4
        if grid % self.encoder_stage_windows[0]:
            raise SegAnyError(f"model config: the first hiera window ({self.encoder_stage_windows[0]}) must divide "
                              f"image_size / 4 = {grid}")
        if self.patch_size != 16 or self.image_size % 32:
            raise SegAnyError(f"model config: a hiera encoder has output stride 16 and pools to stride 32: patch_size "
                              f"must be 16 and image_size a multiple of 32, got {self.patch_size}, {self.image_size}")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def describe_encoder(self) -> str:
        """One line: the encoder and the fields that size it."""
        if self.encoder == "vit":
            return (f"ViT, width {self.encoder_embed_dim}, depth {self.encoder_depth}, "
                    f"{self.encoder_num_heads} heads, window {self.encoder_window_size}, "
                    f"global attention in blocks {list(self.encoder_global_attn_indexes)}")
        if self.encoder == "tiny_vit":
            return (f"TinyViT, stage widths {list(self.encoder_stage_dims)}, depths {list(self.encoder_stage_depths)}, "
                    f"heads {list(self.encoder_stage_heads)}, windows {list(self.encoder_stage_windows)}")
        if self.encoder == "hiera":
            return (f"Hiera, width {self.encoder_embed_dim}, {self.encoder_num_heads} heads (doubled per stage), "
                    f"depths {list(self.encoder_stage_depths)}, windows {list(self.encoder_stage_windows)}, "
                    f"global attention in blocks {list(self.encoder_global_attn_indexes)}")
        return f"{self.encoder}, output stride {self.patch_size}"

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "SamConfig":
        """Inverse of `to_dict`; raises ValueError naming unknown fields."""
        if not isinstance(values, dict):
            raise SegAnyError(f"model config must be a mapping of fields, got {type(values).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown model config field(s): {', '.join(unknown)}")
        converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**converted)


def _vit_encoder(config: SamConfig) -> nn.Module:
    return ImageEncoderViT(
        img_size=config.image_size,
        patch_size=config.patch_size,
        embed_dim=config.encoder_embed_dim,
        depth=config.encoder_depth,
        num_heads=config.encoder_num_heads,
        mlp_ratio=config.encoder_mlp_ratio,
        out_chans=config.prompt_embed_dim,
        window_size=config.encoder_window_size,
        global_attn_indexes=config.encoder_global_attn_indexes,
    )


def _tiny_vit_encoder(config: SamConfig) -> nn.Module:
    return ImageEncoderTinyViT(
        img_size=config.image_size,
        stage_dims=config.encoder_stage_dims,
        stage_depths=config.encoder_stage_depths,
        stage_heads=config.encoder_stage_heads,
        stage_windows=config.encoder_stage_windows,
        mlp_ratio=config.encoder_mlp_ratio,
        out_chans=config.prompt_embed_dim,
    )


def _hiera_encoder(config: SamConfig) -> nn.Module:
    return ImageEncoderHiera(
        img_size=config.image_size,
        embed_dim=config.encoder_embed_dim,
        num_heads=config.encoder_num_heads,
        stage_depths=config.encoder_stage_depths,
        stage_windows=config.encoder_stage_windows,
        global_attn_indexes=config.encoder_global_attn_indexes,
        pos_embed_size=config.encoder_pos_embed_size,
        mlp_ratio=config.encoder_mlp_ratio,
        out_chans=config.prompt_embed_dim,
    )


def _mobilenet_encoder(config: SamConfig) -> nn.Module:
    return ImageEncoderMobileNet(img_size=config.image_size, out_chans=config.prompt_embed_dim,
                                 output_stride=config.patch_size)


# Image encoders by SamConfig.encoder: each maps a config to a module with `img_size`,
# `layer_depth(name)`, `num_layers` and `gradient_checkpointing`, whose forward takes
# (B, 3, image_size, image_size) normalised pixels to (B, prompt_embed_dim, grid, grid); those
# that feed SAM-HQ or SAM 2 also have `early_channels` and `forward_with_early`.
ENCODERS: Dict[str, Callable[[SamConfig], nn.Module]] = {
    "vit": _vit_encoder, "tiny_vit": _tiny_vit_encoder, "hiera": _hiera_encoder, "mobilenet_v2": _mobilenet_encoder,
}
# Mask decoders by SamConfig.decoder.
DECODERS = ("sam", "hq", "sam2", "high_res")

_TINY_VIT_5M = dict(encoder="tiny_vit", encoder_stage_dims=(64, 128, 160, 320), encoder_stage_depths=(2, 2, 6, 2),
                    encoder_stage_heads=(4, 5, 10), encoder_stage_windows=(7, 14, 7))

_MOBILENET_V2 = dict(encoder="mobilenet_v2", image_size=512, patch_size=16, prompt_embed_dim=128,
                     decoder_mlp_dim=1024, iou_head_hidden_dim=128, pixel_mean=(128.0, 128.0, 128.0),
                     pixel_std=(128.0, 128.0, 128.0))

_HIERA = dict(encoder_stage_windows=(8, 4, 14, 7), encoder_pos_embed_size=(7, 7))


# The official architectures (Kirillov et al., 2023) and smaller ones built from the same classes.
CONFIGS: Dict[str, SamConfig] = {
    "vit_h": SamConfig(
        encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16, encoder_global_attn_indexes=(7, 15, 23, 31)
    ),
    "vit_l": SamConfig(
        encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16, encoder_global_attn_indexes=(5, 11, 17, 23)
    ),
    "vit_b": SamConfig(),
    # MobileSAM (Zhang et al., 2023): TinyViT-5M distilled from vit_h, SAM's decoder.
    "vit_t": SamConfig(**_TINY_VIT_5M),
    # SAM-HQ (Ke et al., 2023): SAM's encoders, the HQ decoder.
    "hq_vit_h": SamConfig(decoder="hq", encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16,
                          encoder_global_attn_indexes=(7, 15, 23, 31)),
    "hq_vit_l": SamConfig(decoder="hq", encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16,
                          encoder_global_attn_indexes=(5, 11, 17, 23)),
    "hq_vit_b": SamConfig(decoder="hq"),
    "hq_vit_t": SamConfig(decoder="hq", **_TINY_VIT_5M),
    # SAM 2.1 (Ravi et al., 2024): Hiera encoders with a feature pyramid, SAM 2's decoder.
    "hiera_t": SamConfig(encoder="hiera", decoder="sam2", encoder_embed_dim=96, encoder_num_heads=1,
                         encoder_stage_depths=(1, 2, 7, 2), encoder_global_attn_indexes=(5, 7, 9), **_HIERA),
    "hiera_s": SamConfig(encoder="hiera", decoder="sam2", encoder_embed_dim=96, encoder_num_heads=1,
                         encoder_stage_depths=(1, 2, 11, 2), encoder_global_attn_indexes=(7, 10, 13), **_HIERA),
    "hiera_b+": SamConfig(encoder="hiera", decoder="sam2", encoder_embed_dim=112, encoder_num_heads=2,
                          encoder_stage_depths=(2, 3, 16, 3), encoder_global_attn_indexes=(12, 16, 20),
                          **{**_HIERA, "encoder_pos_embed_size": (14, 14)}),
    "hiera_l": SamConfig(encoder="hiera", decoder="sam2", encoder_embed_dim=144, encoder_num_heads=2,
                         encoder_stage_depths=(2, 6, 36, 4), encoder_global_attn_indexes=(23, 33, 43),
                         **{**_HIERA, "encoder_stage_windows": (8, 4, 16, 8)}),
    # A CPU-sized encoder for tests and small trained models.
    "vit_tiny": SamConfig(
        encoder_embed_dim=192, encoder_depth=4, encoder_num_heads=3, encoder_global_attn_indexes=(1, 3)
    ),
    # The bundled default model (docs/models.md): MobileNetV2 1.0 at 512 pixels, output stride 16
    # (32 x 32 embedding), a 128-wide decoder; pixels mapped to [-1, 1] as Google's weights expect.
    "mobilenet_v2": SamConfig(**_MOBILENET_V2),
    # The same with the trunk's stride-4 and stride-8 features added into the decoder's upscaling.
    "mobilenet_v2_hr": SamConfig(decoder="high_res", **_MOBILENET_V2),
    # The same at 768 pixels (48 x 48 embedding): smaller objects span more embedding cells.
    "mobilenet_v2_hr_768": SamConfig(decoder="high_res", **{**_MOBILENET_V2, "image_size": 768}),
    # The same at 896 pixels (56 x 56 embedding).
    "mobilenet_v2_hr_896": SamConfig(decoder="high_res", **{**_MOBILENET_V2, "image_size": 896}),
}


def get_config(name: str) -> SamConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model config {name!r}; known: {', '.join(CONFIGS)}") from None


def config_name(config: SamConfig) -> str:
    """The registered name of `config`, or 'custom'."""
    return next((name for name, known in CONFIGS.items() if known == config), "custom")


def build_sam(config: SamConfig) -> Sam:
    """A randomly initialised `Sam` of the given sizes, in eval mode."""
    grid = config.embedding_size
    image_encoder = ENCODERS[config.encoder](config)
    decoder_class, decoder_options = MaskDecoder, {}
    if config.decoder == "hq":
        decoder_class, decoder_options = MaskDecoderHQ, {"early_dim": image_encoder.early_channels}
    if config.decoder == "sam2":
        decoder_class = MaskDecoderSAM2
    if config.decoder == "high_res":
        decoder_options = {"high_res_channels": image_encoder.early_channels}
    sam = Sam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=decoder_class(
            **decoder_options,
            transformer_dim=config.prompt_embed_dim,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                num_heads=config.decoder_num_heads,
                mlp_dim=config.decoder_mlp_dim,
                attention_downsample_rate=config.decoder_attention_downsample_rate,
            ),
            num_multimask_outputs=config.num_multimask_outputs,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        pixel_mean=config.pixel_mean,
        pixel_std=config.pixel_std,
    )
    sam.config = config
    sam.resize = config.resize
    sam.prompt_encoder.pad_after_boxes = config.decoder == "sam2"
    return sam.eval()
