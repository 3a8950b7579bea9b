"""Mask statistics of a dataset, as the paper draws them for SA-1B (Figs. 5 and 6).

Per image the number of masks; per mask its relative size sqrt(mask area / image area), its
concavity 1 - mask area / area of its convex hull (0 for a convex mask), and its centre (the
mean of its pixels) in image-normalised coordinates.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Union

import cv2
import numpy as np

from ..data import MaskDataset, Sample
from .plots import figure_file
from .prompts import object_masks
from .records import ImageRecords, each_image


@dataclass
class MaskStatistics:
    masks_per_image: np.ndarray  # (images,)
    relative_sizes: np.ndarray  # (masks,)
    concavities: np.ndarray  # (masks,)
    centres: np.ndarray  # (masks, 2): x, y in [0, 1]

    def summary(self) -> Dict[str, float]:
        return {
            "images": int(len(self.masks_per_image)),
            "masks": int(len(self.relative_sizes)),
            "mean_masks_per_image": float(np.mean(self.masks_per_image)) if len(self.masks_per_image) else 0.0,
            "median_relative_size": float(np.median(self.relative_sizes)) if len(self.relative_sizes) else 0.0,
            "mean_concavity": float(np.mean(self.concavities)) if len(self.concavities) else 0.0,
        }


def concavity(mask: np.ndarray) -> float:
    """1 - area / convex hull area of an (H, W) bool mask (0 if convex).

    Both areas are of polygons through boundary pixel centres (holes subtracted from the
    mask's): a rectangle scores 0; a digitised disc of radius 15 about 0.03 (its stairs).
    """
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 0.0
    hull_area = cv2.contourArea(cv2.convexHull(np.concatenate(contours)))
    if hull_area == 0:  # a line of pixels
        return 0.0
    # In CCOMP's two levels, a contour with a parent is a hole.
    area = sum(-cv2.contourArea(c) if h[3] >= 0 else cv2.contourArea(c) for c, h in zip(contours, hierarchy[0]))
    return max(0.0, 1.0 - area / hull_area)


def dataset_statistics(dataset: MaskDataset, limit: Optional[int] = None, progress: bool = True,
                       records: Optional[ImageRecords] = None) -> MaskStatistics:
    """The statistics of the non-empty masks of the first `limit` images (all without limit),
    images kept in `records` as they are done."""
    per_image = each_image(dataset, limit, image_statistics, records, "mask statistics" if progress else None)
    return MaskStatistics(
        np.array([len(image["sizes"]) for image in per_image], dtype=np.int64),
        np.array([v for image in per_image for v in image["sizes"]]),
        np.array([v for image in per_image for v in image["concavities"]]),
        np.array([v for image in per_image for v in image["centres"]]).reshape(-1, 2),
    )


def image_statistics(sample: Sample) -> Dict[str, list]:
    """Per non-empty mask of one image: relative size, concavity and centre (x, y)."""
    height, width = sample.image.shape[:2]
    stats: Dict[str, list] = {"sizes": [], "concavities": [], "centres": []}
    for mask in object_masks(sample):
        ys, xs = np.nonzero(mask)
        stats["sizes"].append(float(np.sqrt(len(xs) / (height * width))))
        stats["concavities"].append(concavity(mask))
        stats["centres"].append([float((xs.mean() + 0.5) / width), float((ys.mean() + 0.5) / height)])
    return stats


def plot_statistics(stats: MaskStatistics, folder: Union[str, Path], name: str) -> List[Path]:
    """Histograms of masks per image, relative size and concavity, and the centre heat map."""
    folder = Path(folder)
    paths = []
    histograms = [
        ("masks_per_image", stats.masks_per_image, "masks per image", "images"),
        ("relative_size", stats.relative_sizes, "relative mask size (sqrt of area / image area)", "masks"),
        ("concavity", stats.concavities, "concavity (1 - area / convex hull area)", "masks"),
    ]
    for stem, values, xlabel, ylabel in histograms:
        with figure_file(folder / f"{stem}.png") as axes:
            axes.hist(values, bins=min(50, max(len(np.unique(values)), 1)))
            axes.set(title=name, xlabel=xlabel, ylabel=ylabel)
        paths.append(folder / f"{stem}.png")
    with figure_file(folder / "centres.png", size=(4.2, 4.0)) as axes:
        heat, _, _ = np.histogram2d(stats.centres[:, 1], stats.centres[:, 0], bins=20, range=[[0, 1], [0, 1]])
        image = axes.imshow(heat, extent=(0, 1, 1, 0), cmap="viridis")
        axes.figure.colorbar(image, ax=axes, label="masks")
        axes.set(title=f"{name}: mask centres", xlabel="x / width", ylabel="y / height")
    paths.append(folder / "centres.png")
    return paths
