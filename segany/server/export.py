"""A project's masks as SA-1B JSON per image and as one COCO instances JSON."""

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..data.sa1b import write_sa1b
from ..errors import SegAnyError
from ..fileio import write_text_atomic
from .catalog import Catalog
from .store import Store

CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}  # SA-1B masks have no classes


def coco_document(catalog: Catalog, masks: Dict[str, List[Dict[str, Any]]],
                  unreadable: Optional[List[str]] = None) -> Dict[str, Any]:
    """COCO instances JSON of the images in the catalog (those without masks too) and their masks.

    masks: image name -> masks (`masks_by_image`). Each annotation also carries `annotator`,
    `source` (manual or prefill) and `seconds` (annotation time). Images that cannot be read
    are left out (their names appended to `unreadable`); the others are exported.
    """
    images, annotations = [], []
    for image_id, name in enumerate(catalog.names(), start=1):
        try:
            height, width = catalog.size(name)
        except SegAnyError:
            if unreadable is not None:
                unreadable.append(name)
            continue
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for mask in masks.get(name, []):
            annotations.append({
                "id": mask["id"], "image_id": image_id, "category_id": CATEGORY["id"],
                "segmentation": mask["segmentation"], "area": mask["area"], "bbox": mask["bbox"], "iscrowd": 0,
                "annotator": mask["annotator"], "source": mask["source"], "seconds": mask["seconds"],
            })
    return {"info": {"description": "segany annotation project"}, "images": images,
            "annotations": annotations, "categories": [CATEGORY]}


def export_project(store: Store, catalog: Catalog, out: Path) -> Dict[str, Any]:
    """Write out/coco.json and out/sa1b/<image path>.json for every image with masks, atomically each.

    Images whose paths differ only in the suffix (a.jpg, a.png) keep it: sa1b/a.jpg.json,
    sa1b/a.png.json. Returns counts, the images named so ("suffixed") and those that could not be
    read ("unreadable", left out).
    """
    out = Path(out)
    by_image = masks_by_image(store)
    unreadable: List[str] = []
    document = coco_document(catalog, by_image, unreadable)
    stems = Counter(Path(image["file_name"]).with_suffix("").as_posix() for image in document["images"])
    written, suffixed = 0, []
    for image in document["images"]:
        masks = by_image.get(image["file_name"])
        if not masks:
            continue
        records = [{
            "segmentation": m["segmentation"], "area": m["area"], "bbox": m["bbox"],
            "predicted_iou": m["predicted_iou"], "point_coords": m["point_coords"],
            "stability_score": m["stability_score"], "crop_box": [0, 0, image["width"], image["height"]],
        } for m in masks]
        name = Path(image["file_name"])
        if stems[name.with_suffix("").as_posix()] > 1:
            target = out / "sa1b" / f"{name}.json"
            suffixed.append(image["file_name"])
        else:
            target = out / "sa1b" / name.with_suffix(".json")
        write_sa1b(target, Path(image["file_name"]).name, image["width"], image["height"], records)
        written += 1
    write_text_atomic(out / "coco.json", json.dumps(document))
    return {"images": written, "masks": len(document["annotations"]), "suffixed": suffixed, "unreadable": unreadable}


def masks_by_image(store: Store) -> Dict[str, List[Dict[str, Any]]]:
    grouped: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for mask in store.masks():
        grouped[mask["image"]].append(mask)
    return grouped
