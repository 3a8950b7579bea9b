"""The annotation server over HTTP: auth, images, embeddings, the decoder, masks, prefill, export."""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from io import BytesIO

import httpx
import numpy as np
import onnxruntime as ort
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools.coco import COCO

from segany import cli
from segany.checkpoint import load_model
from segany.data.sa1b import read_sa1b
from segany.image_io import read_image
from segany.masks import mask_to_uncompressed_rle, rle_to_mask
from segany.predictor import SamPredictor
from segany.server import create_app
from segany.server.catalog import Catalog
from segany.server.embeddings import EmbeddingService
from segany.server.store import Store
from segany.testing.server import free_port, start_server


def client(server, name: str) -> httpx.Client:
    """A client signed in as a new annotator `name` (bearer token)."""
    token = server.services.store.add_annotator(name)
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=120)


def square_rle(height: int, width: int, x0: int, y0: int, size: int) -> dict:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y0 + size, x0:x0 + size] = True
    return mask_to_uncompressed_rle(mask)


def test_a_token_is_needed(server):
    assert httpx.get(f"{server.url}/api/images").status_code == 401
    bad = httpx.get(f"{server.url}/api/images", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and "segany annotators add" in bad.json()["detail"]
    token = server.services.store.add_annotator("cookie-user")
    with httpx.Client(base_url=server.url) as browser:
        assert browser.post("/api/login", json={"token": "nope"}).status_code == 401
        assert browser.post("/api/login", json={"token": token}).json() == {"annotator": "cookie-user"}
        assert browser.get("/api/images").status_code == 200  # the cookie signs the next requests in
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "segany annotation" in page.text
    assert page.headers["cross-origin-embedder-policy"] == "require-corp"  # WebAssembly threads


def test_images_and_no_way_out_of_the_folder(server, image_folder):
    with client(server, "lister") as http:
        images = http.get("/api/images").json()["images"]
        assert [i["name"] for i in images] == ["dog.jpg", "more/groceries.jpg"]
        assert http.get("/api/file/more/groceries.jpg").content == (image_folder / "more/groceries.jpg").read_bytes()
        os.symlink(image_folder.parent / "secret.txt", image_folder / "link.jpg")
        try:
            for path in ("/api/file/%2e%2e/secret.txt", "/api/file/more/%2e%2e/%2e%2e/secret.txt",
                         "/api/file/%2Fetc%2Fpasswd", "/api/file/link.jpg", "/api/embedding/%2e%2e/secret.txt"):
                response = http.get(path)
                assert response.status_code == 404, path
                assert "no image named" in response.json()["detail"]
        finally:
            (image_folder / "link.jpg").unlink()


def embedding_body(response, model):
    """/api/embedding's body: the embedding (its shape in a header), then the decoder's image
    features in /api/info's order and shapes."""
    shape = tuple(int(v) for v in response.headers["x-embedding-shape"].split(","))
    values = np.frombuffer(response.content, dtype="<f4")
    arrays, offset = [], 0
    for array_shape in (shape, *((1, *s) for s in model.high_res_feature_shapes())):
        count = int(np.prod(array_shape))
        arrays.append(values[offset:offset + count].reshape(array_shape))
        offset += count
    assert offset == len(values)
    return arrays[0], arrays[1:]


def test_embedding_computed_once_and_cached(server, image_folder, tmp_path):
    services = server.services
    runs = services.embeddings.encoder_runs
    with client(server, "embedder") as http, ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: http.get("/api/embedding/more/groceries.jpg"), range(6)))
    assert services.embeddings.encoder_runs == runs + 1  # six requests, one encoder run
    bodies = {r.content for r in responses}
    assert len(bodies) == 1
    predictor = SamPredictor(load_model("default"))
    embedding, features = embedding_body(responses[0], predictor.model)
    image = read_image(image_folder / "more/groceries.jpg")
    predictor.set_image(image)
    np.testing.assert_allclose(embedding, predictor.get_image_embedding().numpy(), atol=1e-5)
    for served, expected in zip(features, predictor.get_high_res_features(), strict=True):
        np.testing.assert_allclose(served, expected.numpy(), atol=1e-5)
    assert responses[0].headers["x-original-size"] == f"{image.shape[0]},{image.shape[1]}"
    assert responses[0].headers["x-input-size"] == ",".join(map(str, predictor.input_size))

    # A restarted server finds it on disk.
    again = EmbeddingService(services.embeddings.model, services.embeddings.cache_dir.parent)
    assert again.get(image_folder / "more/groceries.jpg").embedding.tobytes() == embedding.tobytes()
    assert again.encoder_runs == 0
    again.close()


def test_served_decoder_gives_the_predictors_masks(server, image_folder):
    with client(server, "decoder") as http:
        graph = http.get("/api/decoder.onnx").content
        response = http.get("/api/embedding/dog.jpg")
    predictor = SamPredictor(load_model("default"))
    embedding, features = embedding_body(response, predictor.model)
    height, width = (int(v) for v in response.headers["x-original-size"].split(","))
    predictor.set_embedding(embedding.copy(), (height, width), [f.copy() for f in features])
    point = np.array([[400.0, 300.0]])
    _, scores, low_res = predictor.predict(point, np.array([1]), multimask_output=True, return_logits=True)
    coords = predictor.transform.apply_coords(point, (height, width))
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    masks, iou, low = session.run(None, {
        "image_embeddings": embedding,
        "point_coords": np.concatenate([coords, [[0, 0]]])[None].astype(np.float32),
        "point_labels": np.array([[1, -1]], dtype=np.float32),
        "mask_input": np.zeros((1, 1, *low_res.shape[-2:]), dtype=np.float32),
        "has_mask_input": np.zeros(1, dtype=np.float32),
        "orig_im_size": np.array([height, width], dtype=np.float32),
        **dict(zip(predictor.model.mask_decoder.image_feature_names, features)),
    })
    assert masks.shape == (1, 4, height, width)  # the single-mask output, then the three of multimask
    np.testing.assert_allclose(iou[0, 1:], scores, atol=1e-4)
    np.testing.assert_allclose(low[0, 1:], low_res, atol=1e-3)


def test_masks_per_annotator_versions_and_errors(server):
    with client(server, "ann") as ann, client(server, "ben") as ben:
        h, w = 534, 800
        created = ann.post("/api/masks/dog.jpg", json={"rle": square_rle(h, w, 10, 20, 30), "seconds": 4.5,
                                                       "predicted_iou": 0.8, "point_coords": [[25, 35]]})
        assert created.status_code == 201
        mask = created.json()
        assert mask["area"] == 900 and mask["bbox"] == [10, 20, 30, 30] and mask["annotator"] == "ann"
        assert [m["id"] for m in ann.get("/api/masks/dog.jpg").json()["masks"]] == [mask["id"]]
        assert ben.get("/api/masks/dog.jpg").json()["masks"] == []
        assert mask["id"] in [m["id"] for m in ben.get("/api/masks/dog.jpg?everyone=true").json()["masks"]]
        [dog] = [i for i in ben.get("/api/images").json()["images"] if i["name"] == "dog.jpg"]
        assert dog["masks"] == 0 and dog["all_masks"] >= 1
        [dog] = [i for i in ann.get("/api/images").json()["images"] if i["name"] == "dog.jpg"]
        assert dog["masks"] == 1

        edit = {"rle": square_rle(h, w, 0, 0, 10), "version": 1}
        assert ben.put(f"/api/mask/{mask['id']}", json=edit).status_code == 404  # not ben's
        updated = ann.put(f"/api/mask/{mask['id']}", json=edit)
        assert updated.status_code == 200 and updated.json()["version"] == 2 and updated.json()["area"] == 100
        stale = ann.put(f"/api/mask/{mask['id']}", json=edit)
        assert stale.status_code == 409 and "changed since version 1" in stale.json()["detail"]

        wrong_size = ann.post("/api/masks/dog.jpg", json={"rle": square_rle(10, 10, 0, 0, 2)})
        assert wrong_size.status_code == 422 and "is not the image's [H, W] [534, 800]" in wrong_size.json()["detail"]
        assert ann.post("/api/masks/nothere.jpg", json={"rle": square_rle(h, w, 0, 0, 2)}).status_code == 404
        assert ann.post("/api/masks/dog.jpg", json={"rle": {"size": [h, w]}}).status_code == 422

        assert ben.delete(f"/api/mask/{mask['id']}").status_code == 404
        assert ann.delete(f"/api/mask/{mask['id']}").status_code == 200
        assert ann.get("/api/masks/dog.jpg").json()["masks"] == []


def test_prefill_adds_the_generators_masks_once(server):
    with client(server, "pre") as http:
        first = http.post("/api/prefill/dog.jpg").json()
        assert first["added"] > 0 and len(first["masks"]) == first["added"]
        assert {m["source"] for m in first["masks"]} == {"prefill"}
        assert all(m["predicted_iou"] is not None and m["stability_score"] is not None for m in first["masks"])
        second = http.post("/api/prefill/dog.jpg").json()
        assert second["added"] == 0 and [m["id"] for m in second["masks"]] == [m["id"] for m in first["masks"]]
        image = read_image(server.services.catalog.path("dog.jpg"))
        expected = server.services.prefill.generate(image)  # the same generator, its own encoder run
        assert [m["segmentation"] for m in first["masks"]] == [r["segmentation"] for r in expected]


def test_export_coco_and_sa1b(server, image_folder, tmp_path):
    with client(server, "exporter") as http:
        rle = square_rle(534, 800, 100, 100, 40)
        saved = http.post("/api/masks/dog.jpg", json={"rle": rle, "seconds": 7.0}).json()
        document = http.get("/api/export/coco").json()
    coco = COCO()
    coco.dataset = document
    coco.createIndex()
    [image_id] = [i["id"] for i in document["images"] if i["file_name"] == "dog.jpg"]
    [annotation] = [a for a in document["annotations"] if a["id"] == saved["id"]]
    assert annotation["image_id"] == image_id and annotation["annotator"] == "exporter"
    np.testing.assert_array_equal(coco.annToMask(annotation).astype(bool), rle_to_mask(rle))

    out = tmp_path / "export"
    db = str(server.services.store.engine.url.render_as_string(hide_password=False))
    assert cli.main(["annotations", "export", "--images", str(image_folder), "--db", db, "-o", str(out)]) == 0
    info, annotations = read_sa1b(out / "sa1b" / "dog.json")
    assert info["file_name"] == "dog.jpg" and (info["width"], info["height"]) == (800, 534)
    matching = [a for a in annotations if np.array_equal(a["mask"], rle_to_mask(rle))]
    assert len(matching) == 1
    written = json.loads((out / "coco.json").read_text())
    assert len(written["annotations"]) == len(server.services.store.masks())


def test_annotators_cli(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'a.db'}"
    assert cli.main(["annotators", "add", "carol", "--db", db]) == 0
    token = capsys.readouterr().out.split("token ")[1].split()[0]
    assert Store(db).annotator_for_token(token).name == "carol"
    assert cli.main(["annotators", "list", "--db", db]) == 0
    assert "carol\tactive" in capsys.readouterr().out
    assert cli.main(["annotators", "revoke", "carol", "--db", db]) == 0
    assert Store(db).annotator_for_token(token) is None
    assert cli.main(["annotators", "add", "--db", db]) == 2
    assert "give the annotator's NAME" in capsys.readouterr().err


def test_server_on_postgresql(image_folder, postgres_url, tmp_path, ort_web):
    running = start_server(image_folder, postgres_url, tmp_path / "cache")
    try:
        with client(running, "pg") as http:
            saved = http.post("/api/masks/dog.jpg", json={"rle": square_rle(534, 800, 5, 5, 9)})
            assert saved.status_code == 201
            assert [m["area"] for m in http.get("/api/masks/dog.jpg").json()["masks"]] == [81]
        assert running.services.store.engine.dialect.name == "postgresql"
    finally:
        running.stop()


def test_exif_orientation_and_non_browser_formats(server, tmp_path):
    """Sizes as the model sees the image (EXIF applied); TIFF served as PNG for the browser."""
    folder = tmp_path / "images"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: shown 30 wide, 50 high
    Image.fromarray(pixels).save(folder / "rotated.jpg", exif=exif)
    Image.fromarray(pixels).save(folder / "scan.tif")
    catalog = Catalog(folder)
    assert catalog.size("rotated.jpg") == read_image(folder / "rotated.jpg").shape[:2] == (50, 30)
    token = server.services.store.add_annotator("formats")
    with TestClient(create_app(replace(server.services, catalog=catalog))) as http:
        response = http.get("/api/file/scan.tif", headers={"Authorization": f"Bearer {token}"})
    assert response.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(BytesIO(response.content))), pixels)


def test_serve_command(image_folder, tmp_path, ort_web, monkeypatch, capsys):
    assert cli.main(["serve", "--images", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err
    monkeypatch.setenv("SEGANY_ORT_WEB", str(tmp_path))
    assert cli.main(["serve", "--images", str(image_folder)]) == 2
    assert "npm ci --prefix" in capsys.readouterr().err
    monkeypatch.delenv("SEGANY_ORT_WEB")

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "segany", "serve", "--images", str(image_folder), "--port",
                                str(port), "--db", f"sqlite:///{tmp_path / 'a.db'}", "--cache", str(tmp_path / "c")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/info")
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
                time.sleep(0.3)
        assert response.status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "2 images in" in output
