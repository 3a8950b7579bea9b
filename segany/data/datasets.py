"""Images with instance masks, one interface over the formats segany reads.

Every dataset is a sequence of `Sample`s: the RGB image, its masks as an (N, H, W) bool array
(one per object or region) and, where the format has them, human boundary maps. Readers:

- `LabelMapFolder`: images + instance label maps (PNG/TIFF, 0 = background, k = object k);
- `PennFudan`: PNGImages/ + PedMasks/ (a label-map folder with its own naming);
- `YoloSegFolder`: images/ + labels/*.txt polygons normalised to [0, 1] (YOLO-seg);
- `CocoJson`: a COCO / LVIS instances JSON (polygons and RLE) and its image folder;
- `BSDS500`: images/ + groundTruth/*.mat (every annotator's regions and boundaries);
- `SA1BFolder`: SA-1B image + per-image JSON pairs;
- `ClothingCoParsing`: photos/ + annotations/pixel-level/*.mat (people, their garments and skin);
- `PetTrimaps`: images/ + trimaps/ (Oxford-IIIT Pet: one animal an image);
- `ImageFolder`: images without masks (for `segany pseudo-label`, the data engine's last stage).

`shared_dataset(name, split)` opens the datasets of `../shared/data` with the splits its README
names (the last images by sorted name are for evaluation only), and "synthetic" scenes;
`open_dataset(spec, split)` takes such a name or the path of a dataset in any of the formats.
"""

import abc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ..errors import SegAnyError
from ..image_io import IMAGE_SUFFIXES, read_image
from ..masks import check_rle, rle_to_mask, stack_masks
from .sa1b import read_sa1b

PathLike = Union[str, Path]
SPLITS = ("train", "eval", "all")


@dataclass
class Sample:
    name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    masks: np.ndarray  # (N, H, W) bool
    boundaries: Optional[np.ndarray] = None  # (A, H, W) bool, one map per human annotator


class MaskDataset(abc.ABC):
    """A sequence of `Sample`s, one per name in `names`."""

    names: List[str]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Sample:
        return self.load(self.names[index])

    @abc.abstractmethod
    def load(self, name: str) -> Sample:
        """The sample called `name`."""


def split_names(names: Sequence[str], split: str, eval_count: int) -> List[str]:
    """Sorted names of a split: "eval" the last eval_count, "train" the rest, "all" all of them."""
    if split not in SPLITS:
        raise SegAnyError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    ordered = sorted(names)
    cut = len(ordered) - eval_count
    return {"train": ordered[:cut], "eval": ordered[cut:], "all": ordered}[split]


def instance_masks(labels: np.ndarray) -> np.ndarray:
    """(H, W) label map (0 background, ids > 0) -> (N, H, W) bool, by increasing id."""
    ids = np.unique(labels)
    ids = ids[ids != 0]
    return labels[None] == ids[:, None, None]


def _read_label_map(path: Path) -> np.ndarray:
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise SegAnyError(f"{path}: not a readable label map")
    if labels.ndim == 3:  # a label map saved as RGB(A): the ids are in the first channel
        labels = labels[..., 0]
    return labels


def _stems(folder: Path, suffixes: Sequence[str]) -> Dict[str, Path]:
    if not folder.is_dir():
        raise SegAnyError(f"{folder}: folder not found")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes}


def _check_shape(name: str, image: np.ndarray, masks: np.ndarray) -> None:
    if masks.shape[1:] != image.shape[:2]:
        raise SegAnyError(f"{name}: masks are {masks.shape[1:]} but the image is {image.shape[:2]}")


class LabelMapFolder(MaskDataset):
    """Images and instance label maps with the same stem (image `a.png`, labels `a.png` or `a.tif`)."""

    def __init__(self, images: PathLike, labels: PathLike, split: str = "all", eval_count: int = 0,
                 label_stem: Callable[[str], str] = lambda stem: stem) -> None:
        self.images = _stems(Path(images), IMAGE_SUFFIXES)
        labels_by_stem = _stems(Path(labels), (".png", ".tif", ".tiff"))
        self.labels = {stem: labels_by_stem.get(label_stem(stem)) for stem in self.images}
        missing = [stem for stem, path in self.labels.items() if path is None]
        if missing:
            raise SegAnyError(f"{labels}: no label map for {len(missing)} image(s), e.g. {missing[0]}")
        self.names = split_names(list(self.images), split, eval_count)

    def load(self, name: str) -> Sample:
        image = read_image(self.images[name])
        masks = instance_masks(_read_label_map(self.labels[name]))
        _check_shape(name, image, masks)
        return Sample(name, image, masks)


class PennFudan(LabelMapFolder):
    """Penn-Fudan pedestrians: PNGImages/X.png and PedMasks/X_mask.png."""

    def __init__(self, root: PathLike, split: str = "all", eval_count: int = 50) -> None:
        root = Path(root)
        super().__init__(root / "PNGImages", root / "PedMasks", split, eval_count, lambda stem: f"{stem}_mask")


class YoloSegFolder(MaskDataset):
    """images/ID.jpg with labels/ID.txt: one object a line, `class x1 y1 x2 y2 ...` in [0, 1]."""

    def __init__(self, root: PathLike, split: str = "all", eval_count: int = 0) -> None:
        root = Path(root)
        self.images = _stems(root / "images", IMAGE_SUFFIXES)
        self.labels_dir = root / "labels"
        self.names = split_names(list(self.images), split, eval_count)

    def load(self, name: str) -> Sample:
        image = read_image(self.images[name])
        height, width = image.shape[:2]
        path = self.labels_dir / f"{name}.txt"
        masks = []
        for number, line in enumerate(path.read_text().splitlines() if path.exists() else [], start=1):
            values = line.split()
            if not values:
                continue
            try:
                coordinates = np.array(values[1:], dtype=np.float64)
            except ValueError:  # not numbers
                coordinates = None
            if coordinates is None or len(values) < 7 or len(values) % 2 == 0 or not np.isfinite(coordinates).all():
                raise SegAnyError(f"{path}:{number}: expected 'class x1 y1 x2 y2 x3 y3 ...' (numbers)")
            polygon = coordinates.reshape(-1, 2) * [width, height]
            mask = np.zeros((height, width), dtype=np.uint8)
            cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
            masks.append(mask.astype(bool))
        return Sample(name, image, stack_masks(masks, height, width))


class CocoJson(MaskDataset):
    """A COCO (or LVIS) instances JSON: masks from polygons, RLE or uncompressed RLE."""

    def __init__(self, images: PathLike, annotations: PathLike, split: str = "all", eval_count: int = 0) -> None:
        path = Path(annotations)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise SegAnyError(f"{path}: not a readable COCO JSON file ({err})") from None
        for field in ("images", "annotations"):
            if not isinstance(document, dict) or not isinstance(document.get(field), list):
                raise SegAnyError(f"{path}: missing field '{field}' (a list)")
        self.path, self.images_dir = path, Path(images)
        for i, image in enumerate(document["images"]):
            if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
                raise SegAnyError(f"{path}: images[{i}] needs id and file_name")
        self.info = {str(image["id"]): image for image in document["images"]}
        self.annotations: Dict[str, List[dict]] = {key: [] for key in self.info}
        for i, annotation in enumerate(document["annotations"]):
            if not isinstance(annotation, dict) or "image_id" not in annotation or "segmentation" not in annotation:
                raise SegAnyError(f"{path}: annotations[{i}] needs image_id and segmentation")
            if str(annotation["image_id"]) not in self.info:
                raise SegAnyError(f"{path}: annotations[{i}].image_id {annotation['image_id']!r} is not an image's id")
            self.annotations[str(annotation["image_id"])].append(annotation)
        self.names = split_names(list(self.info), split, eval_count)

    def load(self, name: str) -> Sample:
        from pycocotools import mask as mask_utils

        info = self.info[name]
        image = read_image(self.images_dir / info["file_name"])
        height, width = image.shape[:2]
        masks = []
        for annotation in self.annotations[name]:
            segmentation = annotation["segmentation"]
            where = f"{self.path}: annotation {annotation.get('id', '?')} of image {name}"
            if isinstance(segmentation, list):  # polygons
                polygons = [np.asarray(p, dtype=np.float64) if _is_numbers(p) else None for p in segmentation]
                if not polygons or any(p is None or len(p) < 6 or len(p) % 2 or not np.isfinite(p).all()
                                       for p in polygons):
                    raise SegAnyError(f"{where}: segmentation polygons must be [x1, y1, x2, y2, x3, y3, ...]")
                rle = mask_utils.merge(mask_utils.frPyObjects([p.tolist() for p in polygons], height, width))
                masks.append(mask_utils.decode(rle).astype(bool))
            else:
                masks.append(rle_to_mask(check_rle(segmentation, f"{where}: segmentation", (height, width))))
        masks = stack_masks(masks, height, width)
        _check_shape(name, image, masks)
        return Sample(name, image, masks)


def _is_numbers(values: Any) -> bool:
    return isinstance(values, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


class BSDS500(MaskDataset):
    """BSDS500: images/{split}/ID.jpg, groundTruth/{split}/ID.mat.

    masks: the regions of every annotator (or of one, `annotator=k`); boundaries: one map
    per annotator. Its own splits are "train", "val" and "test" (test: edge evaluation only).
    """

    def __init__(self, root: PathLike, split: str = "train", annotator: Optional[int] = None) -> None:
        if split not in ("train", "val", "test"):
            raise SegAnyError(f"BSDS500 split must be train, val or test; got {split!r}")
        root = Path(root)
        self.images = _stems(root / "images" / split, (".jpg",))
        self.truth_dir = root / "groundTruth" / split
        self.annotator = annotator
        self.names = sorted(self.images)

    def annotations(self, name: str) -> List[Tuple[np.ndarray, np.ndarray]]:
        """(segmentation labels, boundary map) of every annotator of an image."""
        from scipy.io import loadmat

        path = self.truth_dir / f"{name}.mat"
        try:
            truth = loadmat(str(path))["groundTruth"][0]
        except (OSError, KeyError, ValueError) as err:
            raise SegAnyError(f"{path}: not a BSDS500 ground-truth file ({err})") from None
        return [(entry["Segmentation"][0, 0], entry["Boundaries"][0, 0].astype(bool)) for entry in truth]

    def load(self, name: str) -> Sample:
        image = read_image(self.images[name])
        annotations = self.annotations(name)
        chosen = annotations if self.annotator is None else [annotations[self.annotator]]
        masks = np.concatenate([instance_masks(labels) for labels, _ in chosen])
        _check_shape(name, image, masks)
        return Sample(name, image, masks, np.stack([b for _, b in annotations]))


class SA1BFolder(MaskDataset):
    """SA-1B style pairs: `<stem>.json` (see `segany.data.sa1b`) beside the image it names."""

    def __init__(self, folder: PathLike, images: Optional[PathLike] = None, split: str = "all",
                 eval_count: int = 0) -> None:
        self.folder = Path(folder)
        self.images_dir = Path(images) if images is not None else self.folder
        self.documents = _stems(self.folder, (".json",))
        self.names = split_names(list(self.documents), split, eval_count)

    def load(self, name: str) -> Sample:
        info, annotations = read_sa1b(self.documents[name])
        image = read_image(self.images_dir / info["file_name"])
        masks = stack_masks([a["mask"] for a in annotations], info["height"], info["width"])
        _check_shape(name, image, masks)
        return Sample(name, image, masks)


def _components(mask: np.ndarray, min_area: int) -> List[np.ndarray]:
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    parts = [labels == k for k in range(1, count)]
    return [part for part in parts if part.sum() >= min_area]


class ClothingCoParsing(MaskDataset):
    """Clothing Co-Parsing (Yang et al., 2014): photos/ID.jpg and, for the 1004 photos annotated
    pixel by pixel, annotations/pixel-level/ID.mat (`groundtruth`: 0 background, 1-58 garments,
    skin and hair). Masks: every connected piece of every label (a shoe, an arm's skin), each
    label whole where it has several pieces (both shoes), and the whole person."""

    MIN_AREA = 64  # pixels; smaller pieces are annotation slivers

    def __init__(self, root: PathLike, split: str = "all", eval_count: int = 0) -> None:
        root = Path(root)
        self.photos = _stems(root / "photos", (".jpg",))
        self.annotations = _stems(root / "annotations" / "pixel-level", (".mat",))
        self.names = split_names([stem for stem in self.annotations if stem in self.photos], split, eval_count)

    def load(self, name: str) -> Sample:
        from scipy.io import loadmat

        image = read_image(self.photos[name])
        path = self.annotations[name]
        try:
            labels = loadmat(str(path))["groundtruth"]
        except (OSError, KeyError, ValueError) as err:
            raise SegAnyError(f"{path}: not a Clothing Co-Parsing annotation ({err})") from None
        masks = []
        for label in np.unique(labels[labels > 0]):
            pieces = _components(labels == label, self.MIN_AREA)
            masks += pieces + ([np.any(pieces, axis=0)] if len(pieces) > 1 else [])
        person = labels > 0
        if person.any():
            masks.append(person)
        masks = stack_masks(masks, *labels.shape)
        _check_shape(name, image, masks)
        return Sample(name, image, masks)


class PetTrimaps(MaskDataset):
    """Oxford-IIIT Pet trimaps (Parkhi et al., 2012): images/ID.jpg, trimaps/ID.png with 1 animal,
    2 background, 3 the unsure band along its outline. The mask is the animal with that band."""

    def __init__(self, root: PathLike, split: str = "all", eval_count: int = 0) -> None:
        root = Path(root)
        self.images = _stems(root / "images", IMAGE_SUFFIXES)
        self.trimaps = _stems(root / "trimaps", (".png",))
        self.names = split_names([stem for stem in self.images if stem in self.trimaps], split, eval_count)

    def load(self, name: str) -> Sample:
        image = read_image(self.images[name])
        trimap = _read_label_map(self.trimaps[name])
        masks = (trimap != 2)[None]
        _check_shape(name, image, masks)
        return Sample(name, image, masks)


class ImageFolder(MaskDataset):
    """The images of a folder (not its subfolders), each with no masks: what the automatic stage
    of the data engine labels."""

    def __init__(self, folder: PathLike, split: str = "all", eval_count: int = 0) -> None:
        self.images = _stems(Path(folder), IMAGE_SUFFIXES)
        self.names = split_names(list(self.images), split, eval_count)

    def load(self, name: str) -> Sample:
        image = read_image(self.images[name])
        return Sample(name, image, np.zeros((0, *image.shape[:2]), dtype=bool))


# The datasets of ../shared/data and their evaluation splits (see its README).
SHARED_DATASETS: Dict[str, Callable[[Path, str], MaskDataset]] = {
    "pennfudan": lambda root, split: PennFudan(root / "pennfudan", split, eval_count=50),
    "dsb2018": lambda root, split: LabelMapFolder(root / "dsb2018" / "images", root / "dsb2018" / "labels", split,
                                                  eval_count=64),
    "coco128-seg": lambda root, split: YoloSegFolder(root / "coco128-seg", split, eval_count=26),
    "bsds500": lambda root, split: BSDS500(root / "bsds500", _bsds500_split(split)),
    # Not from the folder: procedural nested objects (segany.data.synthetic), other seeds for eval.
    "synthetic": lambda root, split: _synthetic(split),
}


def _bsds500_split(split: str) -> str:
    return {"eval": "test"}.get(split, split)  # its test split is the one kept out of training


def _synthetic(split: str) -> MaskDataset:
    from .synthetic import SyntheticScenes

    if split not in SPLITS:
        raise SegAnyError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    return SyntheticScenes(count=100, seed=1) if split == "eval" else SyntheticScenes(count=10000, seed=0)


def shared_dataset(name: str, split: str, root: PathLike) -> MaskDataset:
    """A dataset of the shared data folder `root` by name, with its documented split.

    For bsds500 the splits are train, val and test ("eval" is test, kept for edge evaluation).
    """
    if name not in SHARED_DATASETS:
        raise SegAnyError(f"unknown dataset {name!r}; known: {', '.join(SHARED_DATASETS)}")
    return SHARED_DATASETS[name](Path(root), split)


def open_dataset(spec: str, split: str, root: PathLike) -> MaskDataset:
    """A dataset named by `spec`: a name of the shared data folder `root` (with its documented
    `split`), or the path of a dataset of one of the formats above, read whole (its layout tells
    the format: a COCO .json file with its images in images/ beside it or in its own folder;
    PNGImages/ + PedMasks/; images/ + labels/ of .txt polygons or of label maps; images/ +
    groundTruth/ (BSDS500: `split` train, val, or test = eval); photos/ + annotations/pixel-level/
    (Clothing Co-Parsing); images/ + trimaps/ (Oxford-IIIT Pet); a folder of SA-1B .json files;
    a folder of images alone (no masks: for pseudo-labelling).
    """
    if spec in SHARED_DATASETS:
        return shared_dataset(spec, split, root)
    path = Path(spec)
    if path.is_file() and path.suffix.lower() == ".json":
        images = path.parent / "images"
        return CocoJson(images if images.is_dir() else path.parent, path)
    if not path.is_dir():
        raise SegAnyError(f"{spec}: neither a dataset name ({', '.join(SHARED_DATASETS)}) nor a dataset path")
    if (path / "PNGImages").is_dir() and (path / "PedMasks").is_dir():
        return PennFudan(path, eval_count=0)
    if (path / "images").is_dir() and (path / "groundTruth").is_dir():
        return BSDS500(path, _bsds500_split(split))
    if (path / "photos").is_dir() and (path / "annotations" / "pixel-level").is_dir():
        return ClothingCoParsing(path)
    if (path / "images").is_dir() and (path / "trimaps").is_dir():
        return PetTrimaps(path)
    labels = path / "labels"
    if (path / "images").is_dir() and labels.is_dir():
        if any(p.suffix == ".txt" for p in labels.iterdir()):
            return YoloSegFolder(path)
        return LabelMapFolder(path / "images", labels)
    if any(p.suffix == ".json" for p in path.iterdir()):
        return SA1BFolder(path)
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
        return ImageFolder(path)
    raise SegAnyError(f"{spec}: not a dataset layout segany reads (COCO .json, PNGImages/ + PedMasks/, "
                      "images/ + labels/, images/ + groundTruth/, photos/ + annotations/pixel-level/, "
                      "images/ + trimaps/, SA-1B .json files, or images)")
