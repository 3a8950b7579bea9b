"""Property-based checks of the parsers that take text from people and clients: prompts and RLE."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from segany.cli import parse_point
from segany.errors import SegAnyError
from segany.masks import check_rle, compressed_runs, mask_to_rle, mask_to_uncompressed_rle, rle_to_mask

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6))
point_text = st.one_of(
    st.text(max_size=30),
    st.lists(numbers, min_size=0, max_size=5).map(lambda values: ",".join(str(v) for v in values)),
)


@given(point_text)
@settings(max_examples=400, deadline=None)
def test_a_point_is_parsed_into_finite_numbers_and_a_label_or_refused(text):
    try:
        x, y, label = parse_point(text)
    except SegAnyError as err:
        assert str(err).startswith("--point ") and "\n" not in str(err)
        return
    assert math.isfinite(x) and math.isfinite(y) and label in (0, 1)


masks = st.tuples(st.integers(1, 24), st.integers(1, 24), st.integers(0, 2**32 - 1)).map(
    lambda a: np.random.default_rng(a[2]).random((a[0], a[1])) < np.random.default_rng(a[2] + 1).random())


@given(masks)
@settings(max_examples=200, deadline=None)
def test_compressed_runs_decode_what_pycocotools_encodes(mask):
    rle = mask_to_rle(mask)
    assert compressed_runs(rle["counts"]) == mask_to_uncompressed_rle(mask)["counts"]
    np.testing.assert_array_equal(rle_to_mask(rle), mask)


rle_counts = st.one_of(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=130), max_size=40),
                       st.lists(st.integers(-5, 80), max_size=12))


@given(st.integers(0, 8), st.integers(0, 8), rle_counts)
@settings(max_examples=500, deadline=None)
def test_any_rle_either_decodes_to_a_whole_mask_or_is_refused(height, width, counts):
    rle = {"size": [height, width], "counts": counts}
    try:
        check_rle(rle, "rle", (height, width))
    except SegAnyError as err:
        assert str(err).startswith("rle") and "\n" not in str(err)
        return
    runs = counts if isinstance(counts, list) else compressed_runs(counts)
    mask = rle_to_mask(rle)
    assert mask.shape == (height, width)
    assert int(mask.sum()) == sum(runs[1::2])  # odd runs are the foreground, and they all fit
    encoded = mask_utils.frPyObjects(rle, height, width) if isinstance(counts, list) else \
        {"size": [height, width], "counts": counts.encode()}
    assert int(mask_utils.area(encoded)) == int(mask.sum())
