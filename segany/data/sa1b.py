"""SA-1B per-image JSON: {"image": {...}, "annotations": [...]}, masks as COCO RLE.

The format Meta released SA-1B in, one file per image:
    image: image_id, width, height, file_name
    annotations: id, segmentation {"size": [H, W], "counts": str}, area, bbox [x, y, w, h],
        predicted_iou, point_coords [[x, y]], stability_score, crop_box [x, y, w, h]
"""

import json
import re
import zlib
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import numpy as np

from ..errors import SegAnyError
from ..fileio import write_files_atomic
from ..masks import check_rle, rle_to_mask, stack_masks
from ..validation import check_number

ANNOTATION_FIELDS = ("id", "segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score",
                     "crop_box")
IMAGE_FIELDS = ("image_id", "width", "height", "file_name")


def sa1b_image_id(file_name: str) -> int:
    """The number in SA-1B names (sa_223750.jpg -> 223750); other names: CRC-32 of the name."""
    match = re.fullmatch(r"(?:.*\D)?(\d+)", Path(file_name).stem)
    return int(match.group(1)) if match else zlib.crc32(file_name.encode("utf-8"))


def sa1b_annotation(record: Dict[str, Any], annotation_id: int) -> Dict[str, Any]:
    """An SA-1B annotation from a generator record made with output_mode="coco_rle"."""
    segmentation = record["segmentation"]
    if not isinstance(segmentation, dict) or not isinstance(segmentation.get("counts"), str):
        raise SegAnyError("SA-1B annotations need COCO RLE segmentations (output_mode='coco_rle')")
    return {"id": annotation_id, **{name: record[name] for name in ANNOTATION_FIELDS[1:]}}


def sa1b_document(file_name: str, width: int, height: int, records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One image's masks (generator records, coco_rle) as an SA-1B JSON document."""
    return {
        "image": {"image_id": sa1b_image_id(file_name), "width": width, "height": height, "file_name": file_name},
        "annotations": [sa1b_annotation(record, i) for i, record in enumerate(records)],
    }


def sa1b_bytes(file_name: str, width: int, height: int, records: List[Dict[str, Any]]) -> bytes:
    """`sa1b_document` as the bytes of its JSON file (for writing with other files as a set)."""
    return json.dumps(sa1b_document(file_name, width, height, records)).encode("utf-8")


def write_sa1b(path: Union[str, Path], file_name: str, width: int, height: int, records: List[Dict[str, Any]]) -> None:
    """Write one image's masks (generator records, coco_rle) as SA-1B JSON, atomically."""
    write_files_atomic({path: sa1b_bytes(file_name, width, height, records)})


def read_sa1b(path: Union[str, Path], masks: bool = True) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """Read an SA-1B JSON file: (image info, annotations).

    With masks=True each annotation also gets "mask", its (H, W) bool mask. Missing or
    malformed fields raise SegAnyError naming the file and the field.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SegAnyError(f"{path}: not a readable SA-1B JSON file ({err})") from None
    if not isinstance(document, dict) or not isinstance(document.get("image"), dict):
        raise SegAnyError(f"{path}: missing field 'image'")
    image = document["image"]
    for name in IMAGE_FIELDS:
        if name not in image:
            raise SegAnyError(f"{path}: missing field 'image.{name}'")
    annotations = document.get("annotations")
    if not isinstance(annotations, list):
        raise SegAnyError(f"{path}: missing field 'annotations'")
    for name in ("height", "width"):
        check_number(f"{path}: image.{name}", image[name], integer=True, low=1)
    if not isinstance(image["file_name"], str) or not image["file_name"]:
        raise SegAnyError(f"{path}: image.file_name must be a file name, got {image['file_name']!r}")
    size = (image["height"], image["width"])
    for i, annotation in enumerate(annotations):
        where = f"{path}: annotations[{i}]"
        if not isinstance(annotation, dict) or "segmentation" not in annotation:
            raise SegAnyError(f"{where}: missing field 'segmentation' (COCO RLE with size and counts)")
        check_rle(annotation["segmentation"], f"{where}.segmentation", size)
        if masks:
            annotation["mask"] = rle_to_mask(annotation["segmentation"])
    return image, annotations


def read_sa1b_masks(path: Union[str, Path]) -> np.ndarray:
    """All masks of an SA-1B JSON file as an (N, H, W) bool array."""
    image, annotations = read_sa1b(path)
    return stack_masks([a["mask"] for a in annotations], image["height"], image["width"])
