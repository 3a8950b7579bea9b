"""Hostile requests to the annotation app: a 4xx with a JSON detail naming the field, the database unchanged."""

import json
import re
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import REPO
from hostile import hostile_images, micro_model_file  # noqa: F401 (fixtures)
from segany.masks import mask_to_rle, mask_to_uncompressed_rle
from segany.server import build_services, create_app

IMAGE = REPO / "examples" / "chelsea.png"
H, W = 300, 451


def square(size: int = 20, height: int = H, width: int = W) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[10:10 + size, 10:10 + size] = True
    return mask


@pytest.fixture(scope="module")
def app(tmp_path_factory, micro_model_file, hostile_images, ort_web):
    root = tmp_path_factory.mktemp("hostile-app")
    images = root / "images"
    images.mkdir()
    shutil.copy(IMAGE, images / "cat.png")
    for name in ("bomb.png", "short.png", "text.png"):
        shutil.copy(hostile_images[name], images / name)
    services = build_services(images, f"sqlite:///{root / 'db.sqlite'}", str(micro_model_file), root / "cache",
                              prefill_points_per_side=2, prefill_iou_thresh=0.0, prefill_stability_thresh=0.0,
                              max_body_bytes=1 << 16)
    token = services.store.add_annotator("mallory")
    with TestClient(create_app(services), headers={"Authorization": f"Bearer {token}"}) as client:
        client.services = services
        yield client
    services.embeddings.close()


def post_raw(app, path, text, **headers):
    return app.post(path, content=text, headers={"Content-Type": "application/json", **headers})


GOOD = {"size": [H, W], "counts": mask_to_rle(square())["counts"]}
TEN = mask_to_rle(square(5, 10, 10))["counts"]
LONG = mask_to_uncompressed_rle(square())["counts"] + [100]

# (id, JSON text of the body for POST /api/masks/cat.png, expected detail)
BAD_MASKS = [
    ("garbage-counts", {"rle": {"size": [H, W], "counts": "!!!garbage~~"}}, r"rle.counts: character '!' at 0"),
    ("small-rle-big-size", {"rle": {"size": [H, W], "counts": TEN}}, r"rle.counts: run lengths sum to 100, not"),
    ("over-long-rle", {"rle": {"size": [H, W], "counts": LONG}}, rf"rle.counts: run lengths sum to {H * W + 100}"),
    ("size-one-number", {"rle": {"size": [H], "counts": GOOD["counts"]}}, r"rle.size: expected \[H, W\]"),
    ("size-three-numbers", {"rle": {"size": [H, W, 3], "counts": GOOD["counts"]}}, r"rle.size: expected \[H, W\]"),
    ("size-other-image", {"rle": {"size": [W, H], "counts": GOOD["counts"]}}, r"rle.size: \[451, 300\] is not the"),
    ("size-beyond-64-bits", {"rle": {"size": [2**70, W], "counts": [1]}}, r"rle.size: expected \[H, W\]"),
    ("size-negative", {"rle": {"size": [-H, W], "counts": [1]}}, r"rle.size: expected \[H, W\]"),
    ("counts-negative", {"rle": {"size": [H, W], "counts": [-5, H * W + 5]}}, r"rle.counts: negative run length"),
    ("counts-short", {"rle": {"size": [H, W], "counts": [5, 10]}}, r"rle.counts: run lengths sum to 15"),
    ("counts-huge-run", {"rle": {"size": [H, W], "counts": [2**70]}}, r"rle.counts: run lengths sum to"),
    ("counts-number", {"rle": {"size": [H, W], "counts": 12}}, r"counts"),
    ("counts-unterminated", {"rle": {"size": [H, W], "counts": "0" + "Q" * 3}}, r"rle.counts: ends inside a run"),
    ("counts-non-ascii", {"rle": {"size": [H, W], "counts": "é"}}, r"rle.counts: character 'é'"),
    ("empty-mask", {"rle": {"size": [H, W], "counts": [H * W]}}, r"rle: the mask is empty"),
    ("no-rle", {"predicted_iou": 0.5}, r"rle"),
    ("rle-string", {"rle": "everything"}, r"rle"),
    ("iou-nan", '{"rle": %s, "predicted_iou": NaN}' % json.dumps(GOOD), r"predicted_iou"),
    ("iou-infinity", '{"rle": %s, "predicted_iou": Infinity}' % json.dumps(GOOD), r"predicted_iou"),
    ("iou-negative", {"rle": GOOD, "predicted_iou": -1}, r"predicted_iou must be at least 0"),
    ("iou-text", {"rle": GOOD, "predicted_iou": "high"}, r"predicted_iou"),
    ("point-infinity", '{"rle": %s, "point_coords": [[Infinity, 1]]}' % json.dumps(GOOD), r"point_coords"),
    ("point-nan", '{"rle": %s, "point_coords": [[1, NaN]]}' % json.dumps(GOOD), r"point_coords"),
    ("point-one-number", {"rle": GOOD, "point_coords": [[1]]}, r"point_coords"),
    ("point-three-numbers", {"rle": GOOD, "point_coords": [[1, 2, 3]]}, r"point_coords"),
    ("point-not-list", {"rle": GOOD, "point_coords": "1,1"}, r"point_coords"),
    ("seconds-negative", {"rle": GOOD, "seconds": -1}, r"seconds"),
    ("seconds-nan", '{"rle": %s, "seconds": NaN}' % json.dumps(GOOD), r"seconds"),
    ("not-json", "{rle: 1", r"JSON|json"),
    ("json-list", [GOOD], r"body|object|dict"),
    ("empty-body", "", r"body|Field required"),
]


@pytest.mark.parametrize("body, detail", [c[1:] for c in BAD_MASKS], ids=[c[0] for c in BAD_MASKS])
def test_bad_masks_are_refused_naming_the_field(app, body, detail):
    before = app.services.store.masks()
    text = body if isinstance(body, str) else json.dumps(body)
    response = post_raw(app, "/api/masks/cat.png", text)
    assert response.status_code == 422, response.text
    assert re.search(detail, json.dumps(response.json()["detail"], ensure_ascii=False)), response.text
    assert app.services.store.masks() == before


# (id, method, path, JSON body or None, expected status, expected detail)
BAD_REQUESTS = [
    ("put-id-beyond-64-bits", "PUT", f"/api/mask/{2**70}", {"rle": GOOD, "version": 1}, 422, "mask_id"),
    ("put-id-negative", "PUT", "/api/mask/-1", {"rle": GOOD, "version": 1}, 422, "mask_id"),
    ("put-id-text", "PUT", "/api/mask/abc", {"rle": GOOD, "version": 1}, 422, "mask_id"),
    ("put-id-unknown", "PUT", "/api/mask/99999", {"rle": GOOD, "version": 1}, 404, "no mask 99999 of yours"),
    ("put-version-beyond-64-bits", "PUT", "/api/mask/1", {"rle": GOOD, "version": 2**70}, 422, "version"),
    ("put-version-zero", "PUT", "/api/mask/1", {"rle": GOOD, "version": 0}, 422, "version"),
    ("put-version-text", "PUT", "/api/mask/1", {"rle": GOOD, "version": "one"}, 422, "version"),
    ("put-no-version", "PUT", "/api/mask/1", {"rle": GOOD}, 422, "version"),
    ("delete-id-beyond-64-bits", "DELETE", f"/api/mask/{2**70}", None, 422, "mask_id"),
    ("delete-id-unknown", "DELETE", "/api/mask/99999", None, 404, "no mask 99999 of yours"),
    ("mask-unknown-image", "POST", "/api/masks/nothing.png", {"rle": GOOD}, 404, "no image named 'nothing.png'"),
    ("mask-outside-folder", "POST", "/api/masks/%2e%2e/db.sqlite", {"rle": GOOD}, 404, "no image named"),
    *[(f"{route}-{name}", method, f"/api/{route}/{name}", {"rle": GOOD} if route == "masks" else None, 422,
       rf"{name}: not a readable image \(|cannot read image .*{name}: ")
      for name in ("bomb.png", "short.png", "text.png")
      for route, method in (("masks", "POST"), ("embedding", "GET"), ("prefill", "POST"))
      if not (route == "masks" and name == "short.png")],  # its header is fine: the pixels are missing
    ("bad-idempotency-key", "POST", "/api/masks/cat.png", {"rle": GOOD}, 422, "Idempotency-Key: 1 to 100"),
]


@pytest.mark.parametrize("method, path, body, status, detail", [c[1:] for c in BAD_REQUESTS],
                         ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_with_a_json_detail(app, method, path, body, status, detail):
    before = app.services.store.masks()
    headers = {"Idempotency-Key": "white space!"} if "idempotency" in path or detail.startswith("Idempotency") else {}
    response = app.request(method, path, json=body, headers=headers)
    assert response.status_code == status, response.text
    assert re.search(detail, json.dumps(response.json()["detail"])), response.text
    assert app.services.store.masks() == before


def test_bodies_over_the_limit_get_413_before_anything_is_stored(app):
    before = app.services.store.masks()
    huge = json.dumps({"rle": {"size": [H, W], "counts": "0" * 70000}})
    response = post_raw(app, "/api/masks/cat.png", huge)
    assert response.status_code == 413 and "larger than 65536 bytes" in response.json()["detail"]

    def chunks():  # no Content-Length: the size is counted as the body arrives
        for _ in range(70):
            yield b"0" * 1000

    response = app.post("/api/masks/cat.png", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    response = app.post("/api/masks/cat.png", content=b"{}", headers={"Content-Length": "x",
                                                                        "Content-Type": "application/json"})
    assert response.status_code == 413
    assert app.services.store.masks() == before


def test_a_retried_save_returns_the_first_one(app):
    before = len(app.services.store.masks())
    body = {"rle": GOOD, "predicted_iou": 0.5}
    first = app.post("/api/masks/cat.png", json=body, headers={"Idempotency-Key": "save-1"})
    again = app.post("/api/masks/cat.png", json=body, headers={"Idempotency-Key": "save-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert len(app.services.store.masks()) == before + 1
    other = app.post("/api/masks/short.png", json=body, headers={"Idempotency-Key": "save-1"})
    assert other.status_code == 409 and "another image" in other.json()["detail"]
    assert app.post("/api/masks/cat.png", json=body, headers={"Idempotency-Key": "save-2"}).status_code == 201
    assert len(app.services.store.masks()) == before + 2
    app.delete(f"/api/mask/{first.json()['id']}")  # deleting a mask frees its key
    assert app.post("/api/masks/cat.png", json=body, headers={"Idempotency-Key": "save-1"}).status_code == 201


def test_a_truncated_embedding_cache_file_is_computed_again(app):
    first = app.get("/api/embedding/cat.png")
    assert first.status_code == 200
    cached = list(app.services.embeddings.cache_dir.glob("*.npz"))
    assert len(cached) == 1
    cached[0].write_bytes(cached[0].read_bytes()[:100])
    app.services.embeddings._memory.clear()  # as after a restart: only the disk cache is left
    runs = app.services.embeddings.encoder_runs
    again = app.get("/api/embedding/cat.png")
    assert again.status_code == 200 and again.content == first.content
    assert app.services.embeddings.encoder_runs == runs + 1
