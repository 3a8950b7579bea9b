"""Segment everything: the automatic mask generator and its parts."""

from .generator import MaskCandidates, SamAutomaticMaskGenerator, stability_score

__all__ = ["MaskCandidates", "SamAutomaticMaskGenerator", "stability_score"]
