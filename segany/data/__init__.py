"""Datasets and annotation formats."""

from .datasets import (
    BSDS500,
    ClothingCoParsing,
    CocoJson,
    ImageFolder,
    LabelMapFolder,
    MaskDataset,
    PennFudan,
    PetTrimaps,
    SA1BFolder,
    Sample,
    YoloSegFolder,
    instance_masks,
    open_dataset,
    shared_dataset,
)
from .sa1b import read_sa1b, read_sa1b_masks, sa1b_annotation, sa1b_image_id, write_sa1b

__all__ = [
    "BSDS500",
    "ClothingCoParsing",
    "CocoJson",
    "ImageFolder",
    "LabelMapFolder",
    "MaskDataset",
    "PennFudan",
    "PetTrimaps",
    "SA1BFolder",
    "Sample",
    "YoloSegFolder",
    "instance_masks",
    "open_dataset",
    "read_sa1b",
    "read_sa1b_masks",
    "sa1b_annotation",
    "sa1b_image_id",
    "shared_dataset",
    "write_sa1b",
]
