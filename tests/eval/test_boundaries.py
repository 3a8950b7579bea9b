"""The boundary benchmark checked on inputs whose scores are known: a map against itself, shifted
maps, an empty map, hand-computed summaries, an independent matching algorithm, the original
BSDS matching code, and each BSDS500 annotator scored against the others."""

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from segany.data import open_dataset
from segany.eval.boundaries import (
    MAX_DISTANCE,
    boundary_counts,
    boundary_scores,
    human_agreement,
    match_pixels,
    maximum_matching,
)


def contours(height: int = 321, width: int = 481) -> np.ndarray:
    """A one-pixel rectangle outline and a diagonal line, far apart, on a BSDS-sized image."""
    truth = np.zeros((height, width), dtype=bool)
    truth[60, 40:200] = truth[200, 40:200] = True
    truth[60:201, 40] = truth[60:201, 199] = True
    for i in range(120):
        truth[80 + i, 300 + i] = True
    return truth


def recall_precision(counts: np.ndarray) -> tuple:
    return counts[:, 0] / counts[:, 1], counts[:, 2] / np.maximum(counts[:, 3], 1)


def test_matching_is_maximum_where_nearest_first_is_not():
    # Predicted a, b; truth x, y: a-x is the closest pair, but b reaches only x and a also y.
    predicted, truth = np.zeros((1, 20), bool), np.zeros((1, 20), bool)
    predicted[0, [10, 13]] = True
    truth[0, [11, 7]] = True
    matched_predicted, matched_truth = match_pixels(predicted, truth, radius=3)
    assert matched_predicted.sum() == matched_truth.sum() == 2


def test_matching_equals_an_independent_maximum_matching():
    rng = np.random.default_rng(0)
    for _ in range(20):
        left, right = rng.integers(0, 30, 120), rng.integers(0, 40, 120)
        cost = rng.random(120)
        partner = maximum_matching(left, right, cost, 30)
        matched = partner[partner >= 0]
        assert len(set(matched.tolist())) == len(matched)  # one-to-one
        edges = set(zip(left.tolist(), right.tolist()))
        assert all((a, b) in edges for a, b in enumerate(partner.tolist()) if b >= 0)
        graph = csr_matrix((np.ones(len(edges)), tuple(np.array(sorted(edges)).T)), shape=(30, 40))
        assert (partner >= 0).sum() == (maximum_bipartite_matching(graph, perm_type="column") >= 0).sum()


def test_a_map_against_itself_and_shifted_maps():
    truth = contours()
    radius = MAX_DISTANCE * np.hypot(*truth.shape)  # 4.3 pixels
    for shift, expected in ((0, 1.0), (2, 1.0), (4, 1.0)):
        recall, precision = recall_precision(boundary_counts(np.roll(truth, shift, axis=0).astype(float), [truth]))
        # Horizontal runs shifted vertically stay matched; only a few corner pixels may differ.
        assert recall.min() > 0.97 * expected and precision.min() > 0.97 * expected, shift
    far = np.roll(truth, int(radius) + 6, axis=0) & ~truth
    recall, precision = recall_precision(boundary_counts(far.astype(float), [truth]))
    assert recall.max() < 0.05  # only a few pixels where the shifted sides pass the corners


def test_an_empty_map_scores_zero():
    truth = contours()
    counts = boundary_counts(np.zeros(truth.shape), [truth, truth])
    assert (counts[:, 0] == 0).all() and (counts[:, 1] == 2 * truth.sum()).all() and (counts[:, 3] == 0).all()
    scores = boundary_scores([counts])
    assert scores.ods == scores.ois == scores.ap == scores.r50 == 0


def test_weak_edges_drop_out_above_their_strength():
    truth = contours()
    edges = truth * 0.3
    counts = boundary_counts(edges, [truth])
    thresholds = np.linspace(0.01, 0.99, 99)
    assert counts[0, 3] > 0.99 * truth.sum()  # thinning may take a corner pixel
    assert (counts[thresholds <= 0.3, 3] == counts[0, 3]).all()
    assert (counts[thresholds > 0.3, 3] == 0).all()


def test_summaries_by_hand():
    thresholds = np.array([0.25, 0.75])
    # Image 1: recall 1, precision 0.5 at the low threshold; recall 0.5, precision 1 at the high one.
    one = np.array([[100, 100, 100, 200], [50, 100, 100, 100]])
    scores = boundary_scores([one], thresholds)
    assert scores.ods == pytest.approx(0.75, abs=1e-4)  # at the curve's midpoint, recall = precision = 0.75
    assert scores.ods_threshold == pytest.approx(0.5, abs=0.01)
    assert scores.ois == pytest.approx(2 / 3)  # the image alone, at its best listed threshold (the higher of a tie)
    # Precision interpolated at recall 0.5, 0.51, ..., 1 along p = 1.5 - r, times 0.01.
    assert scores.ap == pytest.approx(0.3825)
    assert scores.r50 == pytest.approx(1.0)
    # Image 2 is best at the low threshold: OIS adds the counts each image has at its own best.
    two = np.array([[90, 100, 90, 100], [10, 100, 10, 100]])
    scores = boundary_scores([one, two], thresholds)
    recall, precision = (50 + 90) / 200, (100 + 90) / 200
    assert scores.ois == pytest.approx(2 * recall * precision / (recall + precision))


def test_recall_at_half_precision_is_interpolated():
    thresholds = np.array([0.25, 0.75])
    counts = np.array([[80, 100, 30, 100], [40, 100, 70, 100]])  # precision 0.3 -> 0.7 as recall 0.8 -> 0.4
    assert boundary_scores([counts], thresholds).r50 == pytest.approx(0.6)


@pytest.fixture(scope="module")
def bsds_test(shared_data):
    return open_dataset("bsds500", "eval", shared_data)


def test_bsds_annotators_agree_as_published(bsds_test):
    """The BSDS500 paper puts human agreement at F = 0.80; a few images land near it."""
    recall, precision = human_agreement(bsds_test, limit=4)
    f = 2 * recall * precision / (recall + precision)
    assert 0.7 < f < 0.9


def test_counts_match_the_original_bsds_code(bsds_test):
    """The benchmark's own matching (approximate min-cost assignment, through pyEdgeEval's build
    of it) matches the same pixels, or a few fewer, on real human maps."""
    import pyEdgeEval as reference
    maps = bsds_test[0].boundaries
    radius = MAX_DISTANCE * np.hypot(*maps[0].shape)
    for a, b in ((0, 1), (1, 2), (2, 3)):
        ours, _ = match_pixels(maps[a], maps[b], radius)
        theirs, _, _, _ = reference.correspond_pixels(maps[a], maps[b], max_dist=MAX_DISTANCE)
        assert (theirs > 0).sum() <= ours.sum() <= (theirs > 0).sum() * 1.005
