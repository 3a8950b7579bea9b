"""Annotation storage on SQLite and PostgreSQL: tokens, masks, versions, concurrent writers."""

import threading

import numpy as np
import pytest
from sqlalchemy import text

from segany.errors import SegAnyError
from segany.masks import mask_to_uncompressed_rle, rle_to_mask
from segany.server.store import Conflict, MaskIn, NotFound, Store

H, W = 40, 60


def square(x0: int, y0: int, size: int = 10) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y0 + size, x0:x0 + size] = True
    return mask


def mask_in(mask: np.ndarray, **fields) -> MaskIn:
    return MaskIn(rle=mask_to_uncompressed_rle(mask), **fields)


def test_sqlite_uses_wal(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    with store.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_tokens(db_url):
    store = Store(db_url)
    token = store.add_annotator("alice")
    assert store.annotator_for_token(token).name == "alice"
    assert store.annotator_for_token(token + "x") is None
    with pytest.raises(SegAnyError, match="exists already"):
        store.add_annotator("alice")
    store.revoke("alice")
    assert store.annotator_for_token(token) is None
    assert [a["active"] for a in store.annotators()] == [False]
    with pytest.raises(SegAnyError, match="no annotator named"):
        store.revoke("bob")


def test_masks_round_trip_and_belong_to_their_annotator(db_url):
    store = Store(db_url)
    store.add_annotator("alice")
    store.add_annotator("bob")
    alice, bob = (a["id"] for a in store.annotators())
    [saved] = store.add_masks("a/x.jpg", alice, [mask_in(square(5, 5), predicted_iou=0.9, point_coords=[[9, 9]],
                                                         seconds=12.5)], H, W)
    assert saved["area"] == 100 and saved["bbox"] == [5, 5, 10, 10] and saved["version"] == 1
    assert saved["annotator"] == "alice" and saved["seconds"] == 12.5 and saved["point_coords"] == [[9, 9]]
    np.testing.assert_array_equal(rle_to_mask(saved["segmentation"]), square(5, 5))
    store.add_masks("a/x.jpg", bob, [mask_in(square(30, 20))], H, W)
    assert [m["annotator"] for m in store.masks("a/x.jpg")] == ["alice", "bob"]
    assert [m["annotator"] for m in store.masks("a/x.jpg", bob)] == ["bob"]
    assert store.masks("other.jpg") == []

    with pytest.raises(NotFound):
        store.update_mask(saved["id"], bob, 1, mask_in(square(0, 0)))
    with pytest.raises(NotFound):
        store.delete_mask(saved["id"], bob)
    updated = store.update_mask(saved["id"], alice, 1, mask_in(square(0, 0, 5), seconds=3.0))
    assert updated["version"] == 2 and updated["area"] == 25 and updated["seconds"] == 15.5  # time adds up
    with pytest.raises(SegAnyError, match="is not the image's"):
        store.update_mask(saved["id"], alice, 2, MaskIn(rle=mask_to_uncompressed_rle(np.ones((5, 5), bool))))
    with pytest.raises(Conflict, match="changed since version 1"):  # a stale copy
        store.update_mask(saved["id"], alice, 1, mask_in(square(20, 20)))
    assert store.masks("a/x.jpg", alice)[0]["area"] == 25
    store.delete_mask(saved["id"], alice)
    assert [m["annotator"] for m in store.masks("a/x.jpg")] == ["bob"]


@pytest.mark.parametrize("rle, message", [
    ({"size": [H, W + 1], "counts": [H * (W + 1)]}, "is not the image's"),
    ({"size": [H, W], "counts": [5, 10]}, r"rle.counts: run lengths sum to 15, not H \* W = 2400"),
    ({"size": [H, W], "counts": [-5, H * W + 5]}, "rle.counts: negative run length"),
    ({"size": [H, W], "counts": [H * W]}, "empty"),
    ({"size": [H, W], "counts": 12}, "list of run lengths"),
    ({"counts": [H * W]}, "expected a COCO RLE"),
    ({"size": [H, W], "counts": "!!!garbage~~"}, "rle.counts: character '!' at 0"),
    ({"size": [H], "counts": [H * W]}, r"rle.size: expected \[H, W\]"),
])
def test_bad_masks_are_refused_with_the_field(tmp_path, rle, message):
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    store.add_annotator("alice")
    with pytest.raises(SegAnyError, match=message):
        store.add_masks("x.jpg", 1, [MaskIn(rle=rle)], H, W)


def test_a_batch_is_all_or_nothing(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    store.add_annotator("alice")
    bad = MaskIn(rle={"size": [H, W], "counts": [H * W]})
    with pytest.raises(SegAnyError):
        store.add_masks("x.jpg", 1, [mask_in(square(0, 0)), bad], H, W)
    assert store.masks() == []


def test_concurrent_writers_lose_nothing(db_url):
    """Two annotators saving on the same image at once: every mask stored once, under its author."""
    store = Store(db_url)
    store.add_annotator("alice")
    store.add_annotator("bob")
    ids = [a["id"] for a in store.annotators()]
    per_annotator = 15
    errors = []

    def save(annotator_id: int, offset: int) -> None:
        try:
            for k in range(per_annotator):
                store.add_masks("same.jpg", annotator_id, [mask_in(square(k * 3 % 50, offset), seconds=k)], H, W)
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=save, args=(annotator_id, 10 * i)) for i, annotator_id in enumerate(ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    masks = store.masks("same.jpg")
    assert len(masks) == 2 * per_annotator
    for i, name in enumerate(("alice", "bob")):
        mine = [m for m in masks if m["annotator"] == name]
        assert sorted(m["seconds"] for m in mine) == list(range(per_annotator))
        assert all(m["bbox"][1] == 10 * i for m in mine)  # each row holds its author's pixels


def test_concurrent_edits_of_one_version_one_wins(db_url):
    store = Store(db_url)
    store.add_annotator("alice")
    [saved] = store.add_masks("x.jpg", 1, [mask_in(square(0, 0))], H, W)
    outcomes = []
    barrier = threading.Barrier(4)

    def edit(k: int) -> None:
        barrier.wait()
        try:
            store.update_mask(saved["id"], 1, 1, mask_in(square(10 + k, 10)))
            outcomes.append("saved")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=edit, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 3 + ["saved"]
    assert store.masks("x.jpg")[0]["version"] == 2


def test_unreachable_database_is_one_line(tmp_path):
    with pytest.raises(SegAnyError, match="--db"):
        Store(f"sqlite:///{tmp_path / 'missing' / 'a.db'}")
