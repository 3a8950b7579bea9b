"""Simulated interactive prompts for training (paper appendix A, "Training algorithm").

The first prompt of a mask is, with equal probability, a foreground point drawn uniformly
inside it or its bounding box with each coordinate moved by noise of standard deviation 10% of
the box side (at most 20 pixels). Each later point is drawn uniformly from the error region of
the previous prediction: positive in a false negative, negative in a false positive.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ..eval.prompts import tight_box

BOX_NOISE = 0.1  # standard deviation, as a fraction of the box side
MAX_BOX_NOISE = 20.0  # pixels


@dataclass
class Prompt:
    points: np.ndarray  # (N, 2) x, y in pixels (pixel centres are at +0.5)
    labels: np.ndarray  # (N,) 1 foreground, 0 background
    box: Optional[np.ndarray] = None  # (4,) x0, y0, x1, y1

    def add_point(self, x: float, y: float, label: int) -> "Prompt":
        return Prompt(np.vstack([self.points, [[x, y]]]), np.append(self.labels, label), self.box)


def sample_first_prompt(mask: np.ndarray, rng: np.random.Generator, kind: Optional[str] = None) -> Prompt:
    """A point inside the (H, W) bool mask or its noisy box: `kind` "point" or "box", or each
    with probability 1/2 when kind is None."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("cannot prompt for an empty mask")
    if kind not in (None, "point", "box"):
        raise ValueError(f"kind must be 'point', 'box' or None; got {kind!r}")
    if kind == "point" or (kind is None and rng.random() < 0.5):
        i = rng.integers(len(xs))
        return Prompt(np.array([[xs[i], ys[i]]], dtype=np.float64), np.array([1]))
    box = tight_box(mask)
    sides = np.array([box[2] - box[0], box[3] - box[1]] * 2)
    noise = np.clip(rng.normal(0, BOX_NOISE * sides), -MAX_BOX_NOISE, MAX_BOX_NOISE)
    height, width = mask.shape
    noisy = np.clip(box + noise, 0, [width, height, width, height])
    x0, y0, x1, y1 = noisy
    noisy = np.array([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)])
    return Prompt(np.zeros((0, 2)), np.zeros(0, dtype=np.int64), noisy)


def sample_correction_point(predicted: np.ndarray, truth: np.ndarray,
                            rng: np.random.Generator) -> Optional[Tuple[float, float, int]]:
    """(x, y, label) drawn uniformly from the pixels where prediction and truth disagree.

    label is 1 where the truth has the pixel (false negative), 0 where it does not (false
    positive). None when they agree everywhere.
    """
    ys, xs = np.nonzero(predicted != truth)
    if len(xs) == 0:
        return None
    i = rng.integers(len(xs))
    return float(xs[i]), float(ys[i]), int(truth[ys[i], xs[i]])
