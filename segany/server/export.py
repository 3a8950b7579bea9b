"""A project's masks as SA-1B JSON per image and as one COCO instances JSON."""

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List

from ..data.sa1b import write_sa1b
from ..fileio import write_text_atomic
from .catalog import Catalog
from .store import Store

CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}  # SA-1B masks have no classes


def coco_document(catalog: Catalog, masks: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
    """COCO instances JSON of the images in the catalog (those without masks too) and their masks.

    masks: image name -> masks (`masks_by_image`). Each annotation also carries `annotator`,
    `source` (manual or prefill) and `seconds` (annotation time).
    """
    images, annotations = [], []
    for image_id, name in enumerate(catalog.names(), start=1):
        height, width = catalog.size(name)
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for mask in masks.get(name, []):
            annotations.append({
                "id": mask["id"], "image_id": image_id, "category_id": CATEGORY["id"],
                "segmentation": mask["segmentation"], "area": mask["area"], "bbox": mask["bbox"], "iscrowd": 0,
                "annotator": mask["annotator"], "source": mask["source"], "seconds": mask["seconds"],
            })
    return {"info": {"description": "segany annotation project"}, "images": images,
            "annotations": annotations, "categories": [CATEGORY]}


def export_project(store: Store, catalog: Catalog, out: Path) -> Dict[str, int]:
    """Write out/coco.json and out/sa1b/<image path>.json for every image with masks, atomically each."""
    out = Path(out)
    by_image = masks_by_image(store)
    document = coco_document(catalog, by_image)
    written = 0
    for image in document["images"]:
        masks = by_image.get(image["file_name"])
        if not masks:
            continue
        records = [{
            "segmentation": m["segmentation"], "area": m["area"], "bbox": m["bbox"],
            "predicted_iou": m["predicted_iou"], "point_coords": m["point_coords"],
            "stability_score": m["stability_score"], "crop_box": [0, 0, image["width"], image["height"]],
        } for m in masks]
        target = out / "sa1b" / Path(image["file_name"]).with_suffix(".json")
        write_sa1b(target, Path(image["file_name"]).name, image["width"], image["height"], records)
        written += 1
    write_text_atomic(out / "coco.json", json.dumps(document))
    return {"images": written, "masks": len(document["annotations"])}


def masks_by_image(store: Store) -> Dict[str, List[Dict[str, Any]]]:
    grouped: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for mask in store.masks():
        grouped[mask["image"]].append(mask)
    return grouped
