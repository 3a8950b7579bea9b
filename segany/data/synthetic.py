"""Procedural scenes of nested objects: wholes, their parts, and the parts' subparts.

A point on a subpart belongs to three valid masks (subpart, part, whole), which is the
ambiguity SAM's three outputs are trained to resolve. Each scene is drawn from its index and
the dataset seed alone, so a scene is the same in every process and every run.
"""

from typing import List, Tuple

import cv2
import numpy as np

from .datasets import MaskDataset, Sample


class SyntheticScenes(MaskDataset):
    """`count` scenes of `size` x `size` pixels with 1-4 objects, each with parts and subparts.

    masks: every whole, part and subpart (nested: subpart inside part inside whole, minus
    whatever later objects cover).
    """

    def __init__(self, count: int = 1000, size: int = 256, seed: int = 0) -> None:
        self.size, self.seed = size, seed
        self.names = [f"scene_{seed}_{i:06d}" for i in range(count)]

    def load(self, name: str) -> Sample:
        index = int(name.rsplit("_", 1)[1])
        rng = np.random.default_rng([self.seed, index])
        size = self.size
        image = _background(rng, size)
        masks: List[np.ndarray] = []
        for _ in range(int(rng.integers(1, 5))):
            whole = _shape(rng, size, centre=rng.uniform(0.2, 0.8, 2) * size, radius=rng.uniform(0.12, 0.3) * size)
            nested = [whole]
            for _ in range(int(rng.integers(1, 3))):
                part = _inside(rng, whole, scale=rng.uniform(0.35, 0.6))
                if part is None:
                    continue
                nested.append(part)
                subpart = _inside(rng, part, scale=rng.uniform(0.35, 0.6))
                if subpart is not None:
                    nested.append(subpart)
            for mask in nested:  # each level painted in its own colour and texture
                _paint(rng, image, mask)
            masks = [m & ~whole for m in masks] + nested  # a new object hides what it covers
        masks = [m for m in masks if m.sum() >= 16]
        return Sample(name, image, np.stack(masks))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    low = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
    image = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)


def _shape(rng: np.random.Generator, size: int, centre: np.ndarray, radius: float) -> np.ndarray:
    """A random ellipse or star-ish polygon around `centre`."""
    mask = np.zeros((size, size), np.uint8)
    if rng.random() < 0.5:
        axes = (max(2, int(radius)), max(2, int(radius * rng.uniform(0.5, 1.0))))
        cv2.ellipse(mask, (int(centre[0]), int(centre[1])), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        corners = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
        radii = radius * rng.uniform(0.6, 1.0, corners)
        points = centre + np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask.astype(bool)


def _inside(rng: np.random.Generator, outer: np.ndarray, scale: float):
    """A shape centred on a point deep inside `outer`, clipped to it; None if too small."""
    distance = cv2.distanceTransform(outer.astype(np.uint8), cv2.DIST_L2, 3)
    if distance.max() < 4:
        return None
    ys, xs = np.nonzero(distance >= 0.5 * distance.max())
    i = int(rng.integers(len(xs)))
    inner = _shape(rng, outer.shape[0], np.array([xs[i], ys[i]], float), radius=scale * distance.max() * 1.5)
    inner &= outer
    return inner if inner.sum() >= 16 else None


def _paint(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> None:
    colour = rng.integers(0, 256, 3)
    stripes = rng.random() < 0.3
    texture = rng.normal(0, rng.uniform(2, 20), mask.shape + (3,))
    if stripes:
        period, angle = rng.uniform(4, 12), rng.uniform(0, np.pi)
        ys, xs = np.mgrid[: mask.shape[0], : mask.shape[1]]
        texture += 25 * np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period)[..., None]
    image[mask] = np.clip(colour + texture[mask], 0, 255).astype(np.uint8)


def scene_levels(sample: Sample) -> List[Tuple[int, int]]:
    """(i, j) pairs of masks with mask j inside mask i: the nesting of a scene."""
    masks = sample.masks
    return [(i, j) for i in range(len(masks)) for j in range(len(masks))
            if i != j and masks[j].sum() < masks[i].sum() and not (masks[j] & ~masks[i]).any()]
