"""Zero-shot evaluation: prompting a model on datasets it was not trained on."""

from .points import PointScores, center_point, mask_iou, single_point_scores

__all__ = ["PointScores", "center_point", "mask_iou", "single_point_scores"]
