"""Files a careless user or a hostile client hands to segany: broken images, checkpoints, documents."""

import io
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import segany
from conftest import MICRO


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int, rows: int) -> bytes:
    """A valid PNG header for width x height gray pixels whose image data holds only `rows` rows."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"".join(b"\0" + bytes([200]) * width for _ in range(rows)))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data)
            + png_chunk(b"IEND", b""))


class Exploit:
    """Unpickling this runs a shell command (the classic crafted checkpoint)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def bad_images(folder: Path) -> Dict[str, Path]:
    """name -> file: images that must be refused with one line each."""
    folder.mkdir(parents=True, exist_ok=True)
    good = np.random.default_rng(0).integers(0, 255, (64, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(good).save(buffer, format="PNG")
    png = buffer.getvalue()
    buffer = io.BytesIO()
    Image.fromarray(good).save(buffer, format="JPEG")
    jpeg = buffer.getvalue()
    files = {
        "bomb.png": png_declaring(30000, 30000, 1),  # 900 Mpixel declared in ~100 bytes
        "large.png": png_declaring(12000, 12000, 1),  # above segany's limit, below Pillow's
        "short.png": png_declaring(100, 10000, 10),  # image data stops after 10 of 10,000 rows
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": jpeg[: len(jpeg) // 3],
        "empty.png": b"",
        "text.png": b"this is not an image\n",
        "html.jpg": b"<html><body>404</body></html>",
        "zeros.bmp": bytes(64),
    }
    paths = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths[name] = folder / name
    (folder / "folder.png").mkdir(exist_ok=True)
    paths["folder.png"] = folder / "folder.png"
    return paths


def bad_checkpoints(folder: Path, good: segany.Sam) -> Dict[str, Path]:
    """name -> file: checkpoints `load_model`, `segany info` and `segany convert` must refuse."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.clone() for k, v in good.state_dict().items()}
    config = json.dumps(good.config.to_dict())
    made: Dict[str, Path] = {}

    def safetensors(name: str, tensors, metadata) -> None:
        save_file(tensors, folder / name, metadata=metadata)
        made[name] = folder / name

    meta = {"format": "segany", "config": config}
    safetensors("bad-json.safetensors", state, {"format": "segany", "config": "{not json"})
    safetensors("config-list.safetensors", state, {"format": "segany", "config": "[1, 2]"})
    safetensors("config-string-size.safetensors", state,
                {"format": "segany", "config": json.dumps({**good.config.to_dict(), "image_size": "big"})})
    safetensors("config-zero-depth.safetensors", state,
                {"format": "segany", "config": json.dumps({**good.config.to_dict(), "decoder_depth": 0})})
    safetensors("config-unknown-field.safetensors", state,
                {"format": "segany", "config": json.dumps({**good.config.to_dict(), "colour": "red"})})
    nan = dict(state)
    nan["mask_decoder.iou_token.weight"] = torch.full_like(state["mask_decoder.iou_token.weight"], float("nan"))
    safetensors("nan.safetensors", nan, meta)
    integers = dict(state)
    integers["mask_decoder.iou_token.weight"] = state["mask_decoder.iou_token.weight"].to(torch.int32)
    safetensors("integers.safetensors", integers, meta)
    reshaped = dict(state)
    reshaped["mask_decoder.mask_tokens.weight"] = torch.zeros(7, state["mask_decoder.mask_tokens.weight"].shape[1])
    safetensors("shape.safetensors", reshaped, meta)
    missing = {k: v for k, v in state.items() if k != "mask_decoder.iou_token.weight"}
    safetensors("missing-key.safetensors", missing, meta)
    extra = dict(state, **{"mask_decoder.extra": torch.zeros(1)})
    safetensors("extra-key.safetensors", extra, meta)
    save_file(state, folder / "full.safetensors", metadata=meta)
    data = (folder / "full.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    made["truncated.safetensors"] = folder / "truncated.safetensors"
    torch.save({"model": Exploit(folder / "exploited")}, folder / "exploit.pth")
    made["exploit.pth"] = folder / "exploit.pth"
    torch.save({"x": 1}, folder / "not-tensors.pth")
    made["not-tensors.pth"] = folder / "not-tensors.pth"
    (folder / "empty.pth").write_bytes(b"")
    made["empty.pth"] = folder / "empty.pth"
    (folder / "text.pth").write_text("hello")
    made["text.pth"] = folder / "text.pth"
    return made


# Fixtures of the robustness tests (imported by their modules).

@pytest.fixture(scope="session")
def micro_model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "micro.safetensors"
    segany.save_model(segany.random_model(MICRO, seed=2), path)
    return path


@pytest.fixture(scope="session")
def hostile_images(tmp_path_factory) -> Dict[str, Path]:
    return bad_images(tmp_path_factory.mktemp("hostile-images"))


@pytest.fixture(scope="session")
def hostile_checkpoints(tmp_path_factory) -> Dict[str, Path]:
    return bad_checkpoints(tmp_path_factory.mktemp("hostile-checkpoints"), segany.random_model(MICRO, seed=2))


def bad_datasets(folder: Path, image: Path) -> Dict[str, Path]:
    """name -> dataset path (COCO JSON, YOLO folder, SA-1B folder) with a missing or malformed field."""
    made: Dict[str, Path] = {}
    size = list(Image.open(image).size[::-1])  # [H, W]
    coco_image = {"id": 1, "file_name": "a.png"}
    coco = {
        "coco-no-images": {"annotations": []},
        "coco-not-a-mapping": [1, 2],
        "coco-image-without-file": {"images": [{"id": 1}], "annotations": []},
        "coco-annotation-without-segmentation": {"images": [coco_image], "annotations": [{"image_id": 1}]},
        "coco-annotation-of-no-image": {"images": [coco_image], "annotations": [{"image_id": 9, "segmentation": []}]},
        "coco-odd-polygon": {"images": [coco_image], "annotations": [{"image_id": 1, "segmentation": [[1, 2, 3]]}]},
        "coco-text-polygon": {"images": [coco_image],
                              "annotations": [{"image_id": 1, "segmentation": [["a", 2, 3, 4, 5, 6]]}]},
        "coco-rle-other-size": {"images": [coco_image], "annotations": [
            {"image_id": 1, "segmentation": {"size": [10, 10], "counts": [100]}}]},
        "coco-rle-short": {"images": [coco_image], "annotations": [
            {"image_id": 1, "segmentation": {"size": size, "counts": [5, 5]}}]},
    }
    for name, document in coco.items():
        (folder / name / "images").mkdir(parents=True)
        (folder / name / "images" / "a.png").write_bytes(image.read_bytes())
        (folder / name / "instances.json").write_text(json.dumps(document))
        made[name] = folder / name / "instances.json"
    (folder / "coco-not-json").mkdir()
    (folder / "coco-not-json" / "instances.json").write_text("{images: ")
    made["coco-not-json"] = folder / "coco-not-json" / "instances.json"
    for name, line in {"yolo-text": "0 a b c d e f", "yolo-short": "0 0.1 0.2", "yolo-nan": "0 nan 0.1 0.2 0.3 0.4 0.5",
                       "yolo-even": "0 0.1 0.2 0.3 0.4 0.5 0.6 0.7"}.items():
        (folder / name / "images").mkdir(parents=True)
        (folder / name / "labels").mkdir()
        (folder / name / "images" / "a.png").write_bytes(image.read_bytes())
        (folder / name / "labels" / "a.txt").write_text(line + "\n")
        made[name] = folder / name
    info = {"image_id": 1, "file_name": "a.png", "height": size[0], "width": size[1]}
    sa1b = {
        "sa1b-short-counts": {"image": info, "annotations": [{"segmentation": {"size": size, "counts": [3, 4]}}]},
        "sa1b-garbage-counts": {"image": info, "annotations": [{"segmentation": {"size": size, "counts": "!!"}}]},
        "sa1b-no-width": {"image": {k: v for k, v in info.items() if k != "width"}, "annotations": []},
        "sa1b-text-height": {"image": {**info, "height": "300"}, "annotations": []},
    }
    for name, document in sa1b.items():
        (folder / name).mkdir()
        (folder / name / "a.png").write_bytes(image.read_bytes())
        (folder / name / "a.json").write_text(json.dumps(document))
        made[name] = folder / name
    return made


DETECTIONS = {
    "not-json": "[{",
    "not-a-list": json.dumps({"image_id": "x"}),
    "no-bbox": json.dumps([{"image_id": "x", "score": 0.5}]),
    "bbox-three": json.dumps([{"image_id": "x", "bbox": [1, 2, 3], "score": 0.5}]),
    "bbox-negative-width": json.dumps([{"image_id": "x", "bbox": [1, 2, -3, 4], "score": 0.5}]),
    "bbox-text": json.dumps([{"image_id": "x", "bbox": [1, "2", 3, 4], "score": 0.5}]),
    "score-text": json.dumps([{"image_id": "x", "bbox": [1, 2, 3, 4], "score": "high"}]),
    "score-nan": '[{"image_id": "x", "bbox": [1, 2, 3, 4], "score": NaN}]',
    "bbox-infinity": '[{"image_id": "x", "bbox": [1, 2, Infinity, 4], "score": 0.5}]',
}


@pytest.fixture(scope="session")
def hostile_datasets(tmp_path_factory) -> Dict[str, Path]:
    from conftest import REPO

    made = bad_datasets(tmp_path_factory.mktemp("hostile-datasets"), REPO / "examples" / "chelsea.png")
    folder = tmp_path_factory.mktemp("hostile-detections")
    for name, text in DETECTIONS.items():
        (folder / f"{name}.json").write_text(text)
        made[f"detections-{name}"] = folder / f"{name}.json"
    return made
