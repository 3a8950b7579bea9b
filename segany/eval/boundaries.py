"""The BSDS500 boundary benchmark (Arbelaez et al., TPAMI 2010): precision and recall of an edge
map against human boundary maps, and its summary numbers ODS, OIS, AP and R50.

At each of 99 thresholds the edge map is binarised and thinned to one pixel wide lines; its pixels
are matched one-to-one to each human map's pixels no farther apart than 0.0075 x the image
diagonal. Recall counts the matched human pixels over all annotators; precision counts the
predicted pixels matched to any annotator. The original code finds the matching with an
approximate min-cost assignment that penalises unmatched pixels; here it is an exact
maximum-cardinality matching, which matches the same or (rarely, a few pixels in a thousand)
more pixels.
"""

from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import cv2
import numpy as np
from scipy.spatial import cKDTree
from skimage.morphology import thin

from ..data import MaskDataset, Sample
from ..errors import SegAnyError
from ..image_io import write_png
from .records import ImageRecords, each_image

def benchmark_thresholds(count: int = 99) -> np.ndarray:
    """`count` thresholds evenly inside (0, 1): the benchmark's 1/100 ... 99/100 for 99."""
    return np.arange(1, count + 1) / (count + 1)


THRESHOLDS = benchmark_thresholds()
MAX_DISTANCE = 0.0075  # of the image diagonal

# Columns of the counts an image contributes at each threshold.
MATCHED_TRUTH, TRUTH, MATCHED_PREDICTED, PREDICTED = range(4)


@dataclass
class _TruthIndex:
    """What matching needs of a human map, made once for all thresholds."""

    distance: np.ndarray  # (H, W) to the nearest truth pixel
    pixels: np.ndarray  # (G, 2) row, col
    tree: Optional[cKDTree]


def _index(truth: np.ndarray) -> _TruthIndex:
    distance = cv2.distanceTransform((~truth).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    pixels = np.argwhere(truth)
    return _TruthIndex(distance, pixels, cKDTree(pixels) if len(pixels) else None)


def match_pixels(predicted: np.ndarray, truth: np.ndarray, radius: float) -> Tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of the True pixels of two (H, W) bool maps, pairs at most `radius`
    pixels apart, as many pairs as possible: (H, W) bool maps of the matched pixels of each."""
    return _match(predicted, _index(truth), radius)


def _match(predicted: np.ndarray, truth: _TruthIndex, radius: float) -> Tuple[np.ndarray, np.ndarray]:
    matched_predicted = np.zeros_like(predicted, dtype=bool)
    matched_truth = np.zeros(truth.distance.shape, dtype=bool)
    # Predicted pixels farther than radius from every truth pixel cannot match: leave them out.
    near = np.argwhere(predicted & (truth.distance <= radius))  # (P, 2) row, col
    if truth.tree is None or not len(near):
        return matched_predicted, matched_truth
    pairs = cKDTree(near).sparse_distance_matrix(truth.tree, radius + 1e-6, output_type="ndarray")
    partner = maximum_matching(pairs["i"], pairs["j"], pairs["v"], len(near))
    found = partner >= 0
    matched_predicted[tuple(near[found].T)] = True
    matched_truth[tuple(truth.pixels[partner[found]].T)] = True
    return matched_predicted, matched_truth


def maximum_matching(left: np.ndarray, right: np.ndarray, cost: np.ndarray, left_count: int) -> np.ndarray:
    """Maximum-cardinality matching of a bipartite graph given as edges (left[k], right[k]):
    for each left vertex its right partner, or -1.

    Edges are first taken greedily from the lowest cost, which on boundary maps leaves few
    vertices unmatched; then an augmenting path is sought from each of those (Kuhn's algorithm,
    the vertices of a failed search skipped until the matching changes), which makes the
    matching maximum. SciPy's Hopcroft-Karp takes seconds on some of these graphs.
    """
    mate_left: List[int] = [-1] * left_count
    mate_right: Dict[int, int] = {}
    cheapest_first = np.argsort(cost, kind="stable")
    for a, b in zip(left[cheapest_first].tolist(), right[cheapest_first].tolist()):
        if mate_left[a] < 0 and b not in mate_right:
            mate_left[a], mate_right[b] = b, a
    by_left = np.argsort(left, kind="stable")
    starts = np.searchsorted(left[by_left], np.arange(left_count + 1))
    neighbours = np.split(right[by_left], starts[1:-1])
    exhausted: Set[int] = set()  # right vertices that lead to no augmenting path (until one is found)
    for free in range(left_count):
        if mate_left[free] >= 0 or not len(neighbours[free]):
            continue
        came_from: Dict[int, int] = {}  # right vertex -> the left vertex that reached it
        queue, end = deque([free]), None
        while queue and end is None:
            vertex = queue.popleft()
            for b in neighbours[vertex].tolist():
                if b in came_from or b in exhausted:
                    continue
                came_from[b] = vertex
                if b not in mate_right:
                    end = b
                    break
                queue.append(mate_right[b])
        if end is None:
            exhausted.update(came_from)
            continue
        exhausted.clear()
        while end is not None:  # flip the path's edges
            vertex = came_from[end]
            following = mate_left[vertex]
            mate_left[vertex], mate_right[end] = end, vertex
            end = None if vertex == free else following
    return np.array(mate_left, dtype=np.int64)


def boundary_counts(edges: np.ndarray, truths: Sequence[np.ndarray], thresholds: np.ndarray = THRESHOLDS,
                    max_distance: float = MAX_DISTANCE) -> np.ndarray:
    """(T, 4) int64 counts of one image at each threshold: matched truth pixels and truth pixels
    (summed over the annotators), matched predicted pixels and predicted pixels; see the column
    names above. edges: (H, W) float edge strength in [0, 1]; truths: (H, W) bool human maps."""
    height, width = edges.shape
    radius = max_distance * float(np.hypot(height, width))
    truth_total = sum(int(t.sum()) for t in truths)
    indexed = [_index(truth) for truth in truths]
    counts = np.zeros((len(thresholds), 4), dtype=np.int64)
    previous = None
    for row, threshold in enumerate(thresholds):
        predicted = thin(edges >= threshold)
        if previous is not None and np.array_equal(predicted, previous):
            counts[row] = counts[row - 1]
            continue
        previous = predicted
        any_match = np.zeros_like(predicted)
        for truth in indexed:
            matched_predicted, matched_truth = _match(predicted, truth, radius)
            any_match |= matched_predicted
            counts[row, MATCHED_TRUTH] += int(matched_truth.sum())
        counts[row, TRUTH] = truth_total
        counts[row, MATCHED_PREDICTED] = int(any_match.sum())
        counts[row, PREDICTED] = int(predicted.sum())
    return counts


@dataclass
class BoundaryScores:
    """ODS: F-measure at the best threshold for the whole dataset (`ods_threshold`); OIS: with
    the best threshold of each image; AP: area under the precision-recall curve; R50: recall
    where precision is 0.5. `recall` and `precision` per threshold, for the curve."""

    ods: float
    ods_threshold: float
    ois: float
    ap: float
    r50: float
    recall: List[float]
    precision: List[float]

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


def boundary_scores(counts: Sequence[np.ndarray], thresholds: np.ndarray = THRESHOLDS) -> BoundaryScores:
    """The benchmark's numbers from the (T, 4) counts of every image (`boundary_counts`)."""
    if not len(counts):
        raise SegAnyError("no images to score")
    per_image = np.stack(counts)  # (I, T, 4)
    recall, precision = _recall_precision(per_image.sum(axis=0))
    ods_threshold, ods = _best_f(thresholds, recall, precision)
    # OIS: each image at its best threshold (the highest of ties, as the benchmark's code picks).
    image_recall, image_precision = _recall_precision(per_image)
    f = f_measure(image_recall, image_precision)  # (I, T)
    best = f.shape[1] - 1 - np.argmax(f[:, ::-1], axis=1)
    ois_recall, ois_precision = _recall_precision(per_image[np.arange(len(per_image)), best].sum(axis=0))
    return BoundaryScores(
        ods=ods, ods_threshold=ods_threshold, ois=float(f_measure(ois_recall, ois_precision)),
        ap=_average_precision(recall, precision), r50=_recall_at_half_precision(recall, precision),
        recall=recall.tolist(), precision=precision.tolist(),
    )


def f_measure(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Harmonic mean, 0 where both are 0."""
    total = recall + precision
    return np.where(total > 0, 2 * recall * precision / np.where(total > 0, total, 1), 0.0)


def _recall_precision(counts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Recall and precision of (..., 4) counts; 0 where nothing is counted."""
    recall = counts[..., MATCHED_TRUTH] / np.maximum(counts[..., TRUTH], 1)
    precision = counts[..., MATCHED_PREDICTED] / np.maximum(counts[..., PREDICTED], 1)
    return recall, precision


def _best_f(thresholds: np.ndarray, recall: np.ndarray, precision: np.ndarray) -> Tuple[float, float]:
    """(threshold, F) of the best F-measure along the curve, linearly interpolated between
    neighbouring thresholds in 100 steps as the benchmark does."""
    steps = np.linspace(0, 1, 100)

    def along(values: np.ndarray) -> np.ndarray:  # (T,) -> (T - 1, 100): points of each segment
        return values[:-1, None] * (1 - steps) + values[1:, None] * steps

    f = f_measure(along(recall), along(precision))
    best = np.unravel_index(int(np.argmax(f)), f.shape)  # the first best, segment by segment
    return float(along(thresholds)[best]), float(f[best])


def _average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Precision interpolated at recall 0, 0.01, ..., 1 within the recall the curve reaches,
    summed x 0.01 (the benchmark's area under the curve)."""
    recalls, first = np.unique(recall, return_index=True)
    if len(recalls) < 2:
        return 0.0
    grid = np.linspace(0, 1, 101)
    inside = (grid >= recalls[0]) & (grid <= recalls[-1])
    return float(np.interp(grid[inside], recalls, precision[first]).sum() * 0.01)


def _recall_at_half_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """The highest recall along the curve (linear between thresholds) where precision >= 0.5."""
    candidates = [float(r) for r, p in zip(recall, precision) if p >= 0.5]
    for i in range(1, len(recall)):
        (p0, p1), (r0, r1) = precision[i - 1 : i + 1], recall[i - 1 : i + 1]
        if (p0 - 0.5) * (p1 - 0.5) < 0:  # the curve crosses precision 0.5 here
            candidates.append(float(r0 + (0.5 - p0) / (p1 - p0) * (r1 - r0)))
    return max(candidates, default=0.0)


def edge_scores(detector: Callable[[np.ndarray], np.ndarray], dataset: MaskDataset, limit: Optional[int] = None,
                thresholds: np.ndarray = THRESHOLDS, records: Optional[ImageRecords] = None,
                edge_maps: Optional[Path] = None, progress: Optional[str] = None) -> BoundaryScores:
    """The benchmark of `detector` (RGB image -> (H, W) edge strength in [0, 1]) on the first
    `limit` images of a dataset with human boundary maps; images kept in `records` as they are
    done, and with `edge_maps` a folder, each edge map written there as <name>.png."""

    def counts(sample: Sample) -> dict:
        truths = list(_boundaries(sample))
        edges = detector(sample.image)
        if edge_maps is not None:
            write_png(edge_maps / f"{sample.name}.png", np.round(np.clip(edges, 0, 1) * 255).astype(np.uint8))
        return {"counts": boundary_counts(edges, truths, thresholds).tolist()}

    per_image = each_image(dataset, limit, counts, records, progress)
    return boundary_scores([np.array(image["counts"]) for image in per_image], thresholds)


def human_agreement(dataset: MaskDataset, limit: Optional[int] = None, progress: Optional[str] = None
                    ) -> Tuple[float, float]:
    """(recall, precision) of each annotator's boundaries scored against the other annotators of
    the same image, summed over annotators and images: the human point of the benchmark."""

    def counts(sample: Sample) -> dict:
        maps = _boundaries(sample)
        if len(maps) < 2:
            return {"counts": [0, 0, 0, 0]}
        rows = [boundary_counts(maps[a].astype(np.float32), [m for i, m in enumerate(maps) if i != a],
                                thresholds=np.array([0.5]))[0] for a in range(len(maps))]
        return {"counts": np.sum(rows, axis=0).tolist()}

    total = np.sum([image["counts"] for image in each_image(dataset, limit, counts, progress=progress)], axis=0)
    recall, precision = _recall_precision(np.asarray(total))
    return float(recall), float(precision)


def _boundaries(sample: Sample) -> np.ndarray:
    if sample.boundaries is None or not len(sample.boundaries):
        raise SegAnyError(f"image {sample.name}: the dataset has no human boundary maps (as BSDS500's groundTruth)")
    return sample.boundaries
