"""Datasets and annotation formats."""

from .sa1b import read_sa1b, read_sa1b_masks, sa1b_annotation, sa1b_image_id, write_sa1b

__all__ = ["read_sa1b", "read_sa1b_masks", "sa1b_annotation", "sa1b_image_id", "write_sa1b"]
