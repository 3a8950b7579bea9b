"""The `segany` command line."""

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from tqdm import tqdm

from .amg import SamAutomaticMaskGenerator
from .amg.generator import MAX_POINTS_PER_SIDE
from .checkpoint import (
    DEFAULT_MODEL,
    OFFICIAL_CHECKPOINTS,
    convert_checkpoint,
    load_model,
    random_model,
    read_checked,
    resolve_device,
    save_model,
)
from .data.sa1b import sa1b_bytes
from . import __version__
from .errors import SegAnyError
from .extras import require
from .fileio import remove_stale_temp_files, write_files_atomic, write_text_atomic
from .image_io import IMAGE_SUFFIXES, png_bytes, read_image
from .masks import mask_to_bbox, mask_to_rle, rle_to_mask
from .modeling import CONFIGS, build_sam, config_name
from .predictor import SamPredictor
from .validation import check_number
from .visualize import overlay_masks


def _number_type(integer: bool = False, low: Optional[float] = None, high: Optional[float] = None):
    """An argparse type: a finite number (an integer with `integer`) in [low, high]."""
    def parse(text: str):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if integer else 'a number'}, got {text!r}")
        try:
            check_number("value", value, integer=integer, low=low, high=high)
        except SegAnyError as err:
            raise argparse.ArgumentTypeError(str(err).replace("value ", "", 1)) from None
        return value
    return parse


COUNT = _number_type(integer=True, low=1)  # 1, 2, ...
SIZE = _number_type(integer=True, low=0)  # 0, 1, ...
FRACTION = _number_type(low=0, high=1)
PORT = _number_type(integer=True, low=1, high=65535)


def _device_type(text: str) -> str:
    try:
        resolve_device(text)
    except SegAnyError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", type=_device_type, help="torch device (default: cpu)")


def _numbers(text: str, option: str, counts: Sequence[int], form: str) -> List[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts or not all(np.isfinite(values)):
        raise SegAnyError(f"{option} {text!r}: expected {form} (numbers separated by commas)")
    return values


def parse_point(text: str) -> Tuple[float, float, int]:
    """'X,Y' or 'X,Y,LABEL' (LABEL 1 foreground, the default, or 0 background)."""
    values = _numbers(text, "--point", (2, 3), "X,Y or X,Y,LABEL")
    label = values[2] if len(values) == 3 else 1
    if label not in (0, 1):
        raise SegAnyError(f"--point {text!r}: LABEL must be 1 (foreground) or 0 (background)")
    return values[0], values[1], int(label)


def check_prompts(points: List[Tuple[float, float, int]], box: Optional[List[float]], width: int, height: int) -> None:
    """Raise SegAnyError for prompts that do not lie on a (width x height) image."""
    if not points and box is None:
        raise SegAnyError("give at least one --point X,Y[,LABEL] or a --box X0,Y0,X1,Y1")
    for x, y, _ in points:
        if not (0 <= x < width and 0 <= y < height):
            raise SegAnyError(f"--point {x:g},{y:g} lies outside the image (width {width}, height {height})")
    if box is not None:
        x0, y0, x1, y1 = box
        if x1 <= x0:
            raise SegAnyError(f"--box: x1 ({x1:g}) must be greater than x0 ({x0:g})")
        if y1 <= y0:
            raise SegAnyError(f"--box: y1 ({y1:g}) must be greater than y0 ({y0:g})")
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise SegAnyError(f"--box {x0:g},{y0:g},{x1:g},{y1:g} extends outside the image (width {width}, height {height})")


def cmd_segment(args: argparse.Namespace) -> None:
    image_path, out = Path(args.image), Path(args.output)
    if out.exists() and not out.is_dir():
        raise SegAnyError(f"-o {out}: exists and is not a folder")
    image = read_image(image_path)
    height, width = image.shape[:2]
    points = [parse_point(p) for p in args.point]
    box = _numbers(args.box, "--box", (4,), "X0,Y0,X1,Y1") if args.box else None
    check_prompts(points, box, width, height)

    predictor = SamPredictor(load_model(args.model, device=args.device), **_precisions(args))
    predictor.set_image(image)
    coords = np.array([p[:2] for p in points], dtype=np.float64) if points else None
    labels = np.array([p[2] for p in points], dtype=np.int64) if points else None
    masks, scores, _ = predictor.predict(
        point_coords=coords,
        point_labels=labels,
        box=None if box is None else np.array(box),
        multimask_output=args.multimask,
    )
    order = np.argsort(-scores, kind="stable")

    stem = image_path.stem
    records, files = [], {}
    for rank, index in enumerate(order):
        mask = masks[index]
        name = f"{stem}_mask{rank}.png" if len(order) > 1 else f"{stem}_mask.png"
        files[out / name] = png_bytes(mask.astype(np.uint8) * 255)
        records.append(
            {
                "file": name,
                "predicted_iou": float(scores[index]),
                "area": int(mask.sum()),
                "bbox": mask_to_bbox(mask),
                "segmentation": mask_to_rle(mask),
            }
        )
    files[out / f"{stem}_overlay.png"] = png_bytes(overlay_masks(image, [masks[order[0]]], coords, labels, box))
    result = {
        "image": {"file_name": image_path.name, "width": width, "height": height},
        "model": str(args.model),
        "prompt": {
            "points": [[x, y] for x, y, _ in points],
            "labels": [label for _, _, label in points],
            "box": box,
            "multimask": args.multimask,
        },
        "masks": records,
    }
    files[out / f"{stem}.json"] = json.dumps(result, indent=1).encode("utf-8")
    write_files_atomic(files)  # all of them or none
    best = records[0]
    print(f"{out / best['file']}: predicted IoU {best['predicted_iou']:.3f}, area {best['area']} px "
          f"({len(records)} mask(s), overlay {out / (stem + '_overlay.png')})")


def list_images(source: Path) -> List[Path]:
    """The images named by INPUT: an image, a folder of images, or a .txt file of paths."""
    if source.is_dir():
        paths = sorted(p for p in source.iterdir()
                       if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())
    elif source.suffix.lower() == ".txt" and source.is_file():
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
        # Relative paths in a list are relative to the list's folder.
        paths = [source.parent / line for line in lines if line and not line.startswith("#")]
    elif source.exists():
        paths = [source]
    else:
        raise SegAnyError(f"{source}: no such image, folder or list")
    stems: dict = {}
    for path in paths:
        if path.stem in stems and stems[path.stem] != path:
            raise SegAnyError(f"{stems[path.stem]} and {path} would both be written as {path.stem}.json")
        stems[path.stem] = path
    return paths


def cmd_auto(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise SegAnyError(f"-o {out}: exists and is not a folder")
    paths = list_images(Path(args.input))
    for stale in remove_stale_temp_files(out):
        tqdm.write(f"segany: removed {stale}, left by an interrupted run", file=sys.stderr)
    todo = [p for p in paths if not (out / f"{p.stem}.json").exists()]
    generator = _generator(args)
    failed, masks = [], 0
    for path in tqdm(todo, desc="segany auto", unit="image", disable=not todo):
        try:
            image = read_image(path)
        except (SegAnyError, OSError) as err:
            tqdm.write(f"segany: skipping {path}: {err}", file=sys.stderr)
            failed.append(path)
            continue
        records = generator.generate(image)
        files = {out / f"{path.stem}.json": sa1b_bytes(path.name, image.shape[1], image.shape[0], records)}  # marks it done
        if args.overlay:
            largest_first = sorted(records, key=lambda r: -r["area"])
            overlay = overlay_masks(image, [rle_to_mask(r["segmentation"]) for r in largest_first])
            files[out / f"{path.stem}_overlay.png"] = png_bytes(overlay)
        write_files_atomic(files)
        masks += len(records)
    done = len(todo) - len(failed)
    print(f"{out}: {done} image(s) segmented ({masks} masks), {len(paths) - len(todo)} already done, "
          f"{len(failed)} failed")
    return 1 if failed else 0


def cmd_train(args: argparse.Namespace) -> None:
    from .train.trainer import TrainConfig, train

    config = TrainConfig.from_file(Path(args.config)) if args.config else TrainConfig()
    for name in ("output", "steps", "workers", "init", "data_root"):
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)
    train(config, resume=args.resume, stop_after=args.for_steps)
    print(f"{config.output}: model.safetensors, last.pt (resume state), metrics.csv")


def cmd_pseudo_label(args: argparse.Namespace) -> int:
    from .data import open_dataset
    from .train.pseudo_labels import pseudo_label

    datasets = {Path(spec).name: open_dataset(spec, "train", args.data_root) for spec in args.data}
    if len(datasets) < len(args.data):
        raise SegAnyError("--data: two datasets with the same name; their files would mix")
    skipped: List[str] = []
    run = pseudo_label(_generator(args), datasets, Path(args.output), args.limit, skipped=skipped)
    print(f"{args.output}: {run.images} image(s) written with {run.masks} masks, {len(skipped)} unreadable "
          f"skipped; train on it with `datasets: {{{args.output}: WEIGHT}}`")
    if run.label_ious:
        ious = np.asarray(run.label_ious)
        print(f"against the withheld labels ({len(ious)} masks of labelled images): best-match IoU mean "
              f"{ious.mean():.3f}, {np.mean(ious >= 0.5):.0%} at 0.5 or more, "
              f"{np.mean(ious >= 0.8):.0%} at 0.8 or more")
    return 1 if skipped else 0


def cmd_eval_prompts(args: argparse.Namespace) -> None:
    from .eval import baseline_scores, prompt_scores
    from .eval.plots import plot_curves

    dataset, out, began = _eval_start(args)
    predictor = SamPredictor(load_model(args.model, device=args.device))
    scores = prompt_scores(predictor, dataset, args.limit, args.clicks, progress=True,
                           records=_records(args, out, "prompts", "model", "clicks", "point"), first_point=args.point)
    columns = {"objects": scores.objects, "1-point mIoU (confident)": scores.confident, "1-point oracle": scores.oracle,
               "1-point single": scores.single, "box mIoU": scores.box,
               "predicted/true IoU correlation": scores.iou_correlation}
    results = {"scores": scores.to_dict()}
    if args.baselines:
        results["baselines"] = baseline_scores(dataset, args.limit, progress=True, first_point=args.point,
                                               records=_records(args, out, "baselines", "point"))
        columns.update({f"{name} mIoU": value for name, value in results["baselines"].items()})
    tables = [[columns]]
    if args.clicks > 1:
        plot_curves({str(args.model): scores.interactive}, out / "interactive.png",
                    f"{args.data}: {args.point} point, then corrective points", "points", "mIoU")
        tables.append([{"points": k + 1, "mIoU": v} for k, v in enumerate(scores.interactive)])
    _eval_finish(args, out, began, results, tables)


def cmd_eval_edges(args: argparse.Namespace) -> None:
    from .eval.boundaries import benchmark_thresholds, edge_scores, f_measure, human_agreement
    from .eval.edges import BASELINES, sam_edges
    from .eval.plots import plot_precision_recall

    dataset, out, began = _eval_start(args)
    thresholds = benchmark_thresholds(args.thresholds)
    predictor = SamPredictor(load_model(args.model, device=args.device))
    detectors = {str(args.model): lambda image: sam_edges(predictor, image, args.points_per_side, args.nms_thresh)}
    if args.baselines:
        detectors.update(BASELINES)
    scores, rows = {}, []
    for name, detector in detectors.items():
        model_settings = ("model", "points_per_side", "nms_thresh") if name == str(args.model) else ()
        part = "edges" if model_settings else f"edges-{name}"
        records = _records(args, out, part, "thresholds", *model_settings)
        (out / part).mkdir(exist_ok=True)
        scores[name] = edge_scores(detector, dataset, args.limit, thresholds, records, out / part,
                                   progress=f"edges ({name})")
        summary = {k: v for k, v in scores[name].to_dict().items() if k not in ("recall", "precision")}
        rows.append({"method": name, **summary})
    points = {}
    if args.baselines:
        points["human"] = human_agreement(dataset, args.limit, progress="human")
        human_f = float(f_measure(*np.array(points["human"])))
        rows.append({"method": "human", "ods": human_f,
                     **dict.fromkeys(("ods_threshold", "ois", "ap", "r50"), float("nan"))})
    plot_precision_recall({name: (s.recall, s.precision) for name, s in scores.items()}, points,
                          out / "precision_recall.png", f"{args.data}: boundaries")
    results = {"scores": {name: s.to_dict() for name, s in scores.items()},
               "human": dict(zip(("recall", "precision"), points["human"])) if points else None}
    _eval_finish(args, out, began, results, [rows])


def _records(args: argparse.Namespace, out: Path, part: str, *options: str):
    """Per-image results of one part of an evaluation, OUT/PART.jsonl, for --data and the
    given options of args: an interrupted run given the same command resumes from them."""
    from .eval.records import ImageRecords

    return ImageRecords(out / f"{part}.jsonl", {"data": args.data, **{k: getattr(args, k) for k in options}})


def cmd_eval_stats(args: argparse.Namespace) -> None:
    from .eval.statistics import dataset_statistics, plot_statistics

    dataset, out, began = _eval_start(args, default_split="all")
    stats = dataset_statistics(dataset, args.limit, records=_records(args, out, "stats"))
    if not len(stats.relative_sizes):
        raise SegAnyError(f"--data {args.data}: no masks in the first {len(stats.masks_per_image)} image(s)")
    plot_statistics(stats, out, args.data)
    _eval_finish(args, out, began, {"scores": stats.summary()})


def cmd_eval_proposals(args: argparse.Namespace) -> None:
    from .eval.coco import proposal_recall

    dataset, out, began = _eval_start(args)
    records = _records(args, out, "proposals", "model", *GENERATOR_OPTIONS)
    scores = proposal_recall(_generator(args), dataset, args.limit, records=records, figure=out / "recall_iou.png")
    _eval_finish(args, out, began, {"scores": scores})


def cmd_eval_boxes(args: argparse.Namespace) -> None:
    from .eval.coco import box_prompted_ap

    dataset, out, began = _eval_start(args)
    detections = None
    if args.detections:
        detections = _read_detections(Path(args.detections))
        unknown = set(detections) - set(dataset.names)
        if unknown:
            raise SegAnyError(f"{args.detections}: image_id {sorted(unknown)[0]!r} is not an image of "
                              f"--data {args.data}")
    predictor = SamPredictor(load_model(args.model, device=args.device))
    records = _records(args, out, "boxes", "model", "detections")
    scores = box_prompted_ap(predictor, dataset, args.limit, detections, records=records,
                             figure=out / "precision_recall.png")
    _eval_finish(args, out, began, {"scores": scores})


def _read_detections(path: Path) -> dict:
    """A COCO results JSON of boxes ([{"image_id", "bbox": [x, y, w, h], "score"}, ...]) by image name."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SegAnyError(f"{path}: not a readable detections JSON ({err})") from None
    by_image: dict = {}
    for i, detection in enumerate(found if isinstance(found, list) else [None]):
        if not isinstance(detection, dict) or not all(k in detection for k in ("image_id", "bbox", "score")):
            raise SegAnyError(f"{path}: [{i}] needs image_id, bbox [x, y, w, h] and score")
        box = detection["bbox"]
        if not isinstance(box, list) or len(box) != 4:
            raise SegAnyError(f"{path}: [{i}].bbox must be [x, y, w, h]")
        for j, value in enumerate(box):
            check_number(f"{path}: [{i}].bbox[{j}]", value, low=0 if j >= 2 else None)
        check_number(f"{path}: [{i}].score", detection["score"])
        by_image.setdefault(str(detection["image_id"]), []).append(detection)
    return by_image


def _eval_start(args: argparse.Namespace, default_split: str = "eval"):
    """The dataset of --data (NAME[:SPLIT] or a path), the output folder, the start time."""
    from .data import open_dataset

    name, _, split = args.data.partition(":")
    dataset = open_dataset(name, split or default_split, args.data_root)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    return dataset, out, time.perf_counter()


def _eval_finish(args: argparse.Namespace, out: Path, began: float, results: dict,
                 tables: Optional[List[List[dict]]] = None) -> None:
    """results.json (NaN written as null) and results.md: `tables` (default: one row of
    results["scores"]), each row led by the data's name in the first table; printed too."""
    model = {"model": str(args.model)} if "model" in args else {}
    results = {**model, "data": args.data, "limit": args.limit, **results,
               "seconds": round(time.perf_counter() - began, 1)}
    write_text_atomic(out / "results.json", json.dumps(_nan_to_none(results), indent=1))
    tables = tables or [[results["scores"]]]
    tables[0] = [{"data": args.data, **row} for row in tables[0]]
    text = "\n".join(_markdown_table(rows) for rows in tables)
    write_text_atomic(out / "results.md", text)
    print(text, end="")


def _nan_to_none(value):
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def _markdown_table(rows: List[dict]) -> str:
    """Rows of equal keys as a markdown table; floats with 3 decimals."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()] for row in rows]
    return "".join(f"| {' | '.join(row)} |\n" for row in [list(rows[0]), ["---"] * len(rows[0]), *cells])


def cmd_export_onnx(args: argparse.Namespace) -> None:
    from .export import export_decoder, export_encoder

    model = load_model(args.model)
    out = Path(args.output)
    written = []
    for suffix, quantize in [("", False)] + ([("-int8", True)] if args.quantize else []):
        written.append(export_decoder(model, out / f"decoder{suffix}.onnx", args.single_mask, args.stability_score,
                                      quantize, hq_token_only=args.hq_token_only))
        if args.encoder:
            written.append(export_encoder(model, out / f"encoder{suffix}.onnx", quantize))
    print("\n".join(f"{path}: {path.stat().st_size / 2**20:.1f} MiB" for path in written))


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from .server import build_services, create_app

    services = build_services(Path(args.images), args.db, args.model, args.cache and Path(args.cache),
                              _precisions(args)["dtype"], args.prefill_points_per_side, args.prefill_iou_thresh,
                              args.prefill_stability_thresh, args.max_body_bytes)
    print(f"segany serve: {len(services.catalog.names())} images in {services.catalog.root}, "
          f"masks in {services.store.engine.url.render_as_string()}; open http://{args.host}:{args.port}/")
    uvicorn.run(create_app(services), host=args.host, port=args.port, log_level="warning")


def cmd_annotators(args: argparse.Namespace) -> None:
    from .server.store import Store, default_db_url

    if args.action != "list" and not args.name:
        raise SegAnyError(f"annotators {args.action}: give the annotator's NAME")
    store = Store(args.db or default_db_url())
    if args.action == "add":
        print(f"{args.name}: token {store.add_annotator(args.name)}  (shown once; give it to {args.name})")
    elif args.action == "revoke":
        store.revoke(args.name)
        print(f"{args.name}: token revoked")
    else:
        for annotator in store.annotators():
            print(f"{annotator['name']}\t{'active' if annotator['active'] else 'revoked'}\t{annotator['created_at']}")


def cmd_annotations_export(args: argparse.Namespace) -> int:
    from .server.catalog import Catalog
    from .server.export import export_project
    from .server.store import Store, default_db_url

    counts = export_project(Store(args.db or default_db_url()), Catalog(Path(args.images)), Path(args.output))
    for name in counts["unreadable"]:
        print(f"segany: {name}: not a readable image, left out of the export", file=sys.stderr)
    if counts["suffixed"]:
        print(f"segany: {len(counts['suffixed'])} images share a name with another but for the suffix; their "
              f"SA-1B files keep it ({counts['suffixed'][0]}.json, ...)", file=sys.stderr)
    print(f"{args.output}: coco.json and sa1b/ ({counts['masks']} masks on {counts['images']} images)")
    return 1 if counts["unreadable"] else 0


def cmd_engine_run(args: argparse.Namespace) -> int:
    from .engine import EngineConfig, list_images, run_engine

    generator = {**_generator_settings(args), **_precisions(args)}
    config = EngineConfig(model=args.model, generator=generator, min_area=args.min_area, shard_size=args.shard_size,
                          shard_format=args.format, dataset=args.dataset, workers=args.workers,
                          threads=args.threads, gpus=args.gpus)
    summary = run_engine(list_images(args.input), args.output, config, address=args.address)
    print(f"{args.output}: {summary}")
    return 1 if summary.errors else 0


def cmd_convert(args: argparse.Namespace) -> None:
    config = convert_checkpoint(args.source, args.destination)
    print(f"{args.destination}: {config_name(config)} weights written")


def cmd_average(args: argparse.Namespace) -> None:
    from .train.average import average_checkpoints

    model = average_checkpoints(args.checkpoints)
    save_model(model, args.output)
    print(f"{args.output}: the average of {len(args.checkpoints)} {config_name(model.config)} checkpoints")


def cmd_init(args: argparse.Namespace) -> None:
    save_model(random_model(args.config, seed=args.seed), args.output)
    print(f"{args.output}: randomly initialised {args.config} (seed {args.seed})")


def cmd_info(args: argparse.Namespace) -> None:
    _, config, _ = read_checked(args.checkpoint)
    with torch.device("meta"):  # shapes only: batch-norm statistics are not parameters
        model = build_sam(config)
    parts = {part: sum(p.numel() for p in getattr(model, part).parameters())
             for part in ("image_encoder", "prompt_encoder", "mask_decoder")}
    print(json.dumps({"family": config.family, "architecture": config_name(config),
                      "encoder": config.describe_encoder(),
                      "parameters": sum(parts.values()), "parameters_by_part": parts,
                      "config": config.to_dict()}, indent=1))


def _add_precision_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bf16", action="store_true",
                        help="image encoder in bfloat16: about 2x faster on recent CPUs, masks within 0.999 "
                             "mean IoU of float32")
    parser.add_argument("--bf16-decoder", action="store_true",
                        help="mask decoder in bfloat16 too: faster for many prompts, about 0.98 mean IoU")


def _precisions(args: argparse.Namespace) -> dict:
    return {"dtype": torch.bfloat16 if args.bf16 else torch.float32,
            "decoder_dtype": torch.bfloat16 if args.bf16_decoder else torch.float32}


# The options of `_add_generator_options` that change the masks.
GENERATOR_OPTIONS = ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
                     "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "crop_overlap_ratio",
                     "crop_n_points_downscale_factor", "min_mask_region_area", "bf16", "bf16_decoder")


def _engine_device(_text: str) -> str:
    raise argparse.ArgumentTypeError("engine run places models with --gpus (GPUs per actor), not --device")


def _add_generator_options(parser: argparse.ArgumentParser, device: bool = True) -> None:
    """The automatic mask generator's settings, the device (or, without `device`, a pointer to
    --gpus) and the precision."""
    parser.add_argument("--points-per-side", type=_number_type(integer=True, low=1, high=MAX_POINTS_PER_SIDE), default=32,
                        help="grid points along each side (default 32)")
    parser.add_argument("--points-per-batch", type=COUNT, default=64, help="prompts decoded together (default 64)")
    parser.add_argument("--pred-iou-thresh", type=FRACTION, default=0.88, help="minimum predicted IoU (default 0.88)")
    parser.add_argument("--stability-score-thresh", type=FRACTION, default=0.95, help="minimum stability (default 0.95)")
    parser.add_argument("--stability-score-offset", type=_number_type(low=0), default=1.0, help="logit offset of stability (1.0)")
    parser.add_argument("--box-nms-thresh", type=FRACTION, default=0.7, help="box IoU for NMS in a crop (default 0.7)")
    parser.add_argument("--crop-n-layers", type=SIZE, default=0, help="layers of zoomed crops (default 0)")
    parser.add_argument("--crop-nms-thresh", type=FRACTION, default=0.7, help="box IoU for NMS across crops (0.7)")
    parser.add_argument("--crop-overlap-ratio", type=FRACTION, default=512 / 1500, help="crop overlap (default 512/1500)")
    parser.add_argument("--crop-n-points-downscale-factor", type=COUNT, default=1,
                        help="grid points a side divided by this per crop layer (default 1)")
    parser.add_argument("--min-mask-region-area", type=SIZE, default=0,
                        help="fill holes and remove islands smaller than this (pixels; default 0: off)")
    if device:
        _add_device_option(parser)
    else:
        parser.add_argument("--device", type=_engine_device, help=argparse.SUPPRESS)
    _add_precision_options(parser)


def _generator_settings(args: argparse.Namespace) -> dict:
    """The generator settings of `_add_generator_options` (checked by their argparse types)."""
    return {name: getattr(args, name) for name in GENERATOR_OPTIONS + ("points_per_batch",)
            if name not in ("bf16", "bf16_decoder")}


def _generator(args: argparse.Namespace) -> SamAutomaticMaskGenerator:
    """The generator `_add_generator_options` describes, writing COCO RLE."""
    return SamAutomaticMaskGenerator(load_model(args.model, device=args.device), **_generator_settings(args),
                                     output_mode="coco_rle", **_precisions(args))


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (main prints it like any other bad input)."""

    def error(self, message: str):
        command = self.prog.partition(" ")[2]
        raise SegAnyError(f"{command + ': ' if command else ''}{message} (see {self.prog} --help)")


def _needs(parser: argparse.ArgumentParser, extra: str) -> None:
    """Mark a command as needing an extra (`segany.extras`), checked before it runs."""
    parser.set_defaults(extra=extra, command_name=parser.prog)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="segany", description="Segment Anything on the command line.")
    parser.add_argument("--version", action="version", version=f"segany {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    model_help = (
        "checkpoint: a released SAM, MobileSAM or SAM-HQ .pth or SAM 2.1 .pt, a segany .safetensors, "
        f"'default' (the bundled model) or a released checkpoint's name ({', '.join(OFFICIAL_CHECKPOINTS)}) found in "
        "$SEGANY_WEIGHTS"
    )

    seg = sub.add_parser("segment", help="segment an image from point and box prompts")
    seg.add_argument("image", help="image file (any format Pillow reads)")
    seg.add_argument("--point", action="append", default=[], metavar="X,Y[,LABEL]",
                     help="prompt point in image pixels; LABEL 1 foreground (default), 0 background; repeatable")
    seg.add_argument("--box", metavar="X0,Y0,X1,Y1", help="prompt box in image pixels")
    seg.add_argument("--model", default=DEFAULT_MODEL, help=model_help + " (default: default)")
    seg.add_argument("--multimask", action="store_true", help="write the 3 ambiguity-aware masks, best first")
    _add_device_option(seg)
    _add_precision_options(seg)
    seg.add_argument("-o", "--output", required=True, help="output folder")
    seg.set_defaults(run=cmd_segment)

    auto = sub.add_parser("auto", help="segment everything: SA-1B JSON per image from a grid of point prompts")
    auto.add_argument("input", help="an image, a folder of images, or a .txt file with one image path per line")
    auto.add_argument("--model", default=DEFAULT_MODEL, help=model_help + " (default: default)")
    auto.add_argument("-o", "--output", required=True, help="output folder: <stem>.json per image (skipped if present)")
    auto.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png, each mask in its colour")
    _add_generator_options(auto)
    auto.set_defaults(run=cmd_auto)

    pseudo = sub.add_parser("pseudo-label", help="self-training data: automatic masks of training images "
                                                  "written as an SA-1B folder that `segany train` reads")
    pseudo.add_argument("--data", action="append", required=True, metavar="NAME|PATH",
                        help="a dataset of --data-root (its training split) or a dataset path; repeatable")
    pseudo.add_argument("--data-root", default="../shared/data", help="folder of the shared datasets")
    pseudo.add_argument("--limit", type=COUNT, help="first N images of each dataset only")
    pseudo.add_argument("--model", default=DEFAULT_MODEL, help=model_help + " (default: default)")
    pseudo.add_argument("-o", "--output", required=True,
                        help="output folder: <dataset>-<name>.png + .json per image with masks; resumable")
    _add_generator_options(pseudo)
    _needs(pseudo, "train")
    pseudo.set_defaults(run=cmd_pseudo_label)

    tr = sub.add_parser("train", help="train or fine-tune a model (the paper's recipe)")
    tr.add_argument("config", nargs="?", help="YAML or JSON file of segany.train.trainer.TrainConfig fields")
    tr.add_argument("--output", help="run folder (overrides the config)")
    tr.add_argument("--steps", type=COUNT, help="total steps (overrides the config)")
    tr.add_argument("--init", help="checkpoint to start from: " + model_help)
    tr.add_argument("--data-root", help="folder of the shared datasets (default ../shared/data)")
    tr.add_argument("--workers", type=SIZE, help="data loading processes")
    tr.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    tr.add_argument("--for-steps", type=COUNT, help="stop after this many steps of this run (resume later)")
    _needs(tr, "train")
    tr.set_defaults(run=cmd_train)

    ev = sub.add_parser("eval", help="zero-shot evaluation tasks")
    tasks = ev.add_subparsers(dest="task", required=True)
    prompts = tasks.add_parser(
        "prompts", help="1-point and box mIoU on each object, and mIoU after 1..N points (paper section 7.1)")
    prompts.add_argument("--model", default=DEFAULT_MODEL, help=model_help + " (default: default)")
    prompts.add_argument("--data", required=True, metavar="NAME[:SPLIT]|PATH",
                         help="a dataset of --data-root (pennfudan, dsb2018, coco128-seg, bsds500, synthetic; "
                              "split default: eval), or the path of a dataset read whole (COCO .json, "
                              "SA-1B folder, images/ + labels/, ...)")
    prompts.add_argument("--data-root", default="../shared/data", help="folder of the shared datasets")
    prompts.add_argument("--limit", type=COUNT, help="first N images only")
    prompts.add_argument("--baselines", action="store_true",
                         help="also score classical methods with the same prompts: OpenCV GrabCut from the box "
                              "and from a square around the point, scikit-image's random walker from the point")
    prompts.add_argument("--point", choices=("center", "random"), default="center",
                         help="each object's first point: the pixel farthest from its boundary (default) or a "
                              "pixel drawn uniformly from it (seeded by the image name)")
    prompts.add_argument("--clicks", type=COUNT, default=9,
                         help="points of the interactive curve (the first point, then corrective points; "
                              "default 9; 1: no curve)")
    _add_device_option(prompts)
    prompts.add_argument("-o", "--output", required=True,
                         help="output folder: results.json, results.md, interactive.png, per-image results as "
                              ".jsonl (a rerun resumes)")
    _needs(prompts, "eval")
    prompts.set_defaults(run=cmd_eval_prompts)

    proposals = tasks.add_parser("proposals", help="mask AR of the automatic generator's masks as object "
                                                   "proposals (paper section 7.3)")
    boxes = tasks.add_parser("boxes", help="mask AP of box-prompted masks: ground-truth boxes or a detector's "
                                           "(paper section 7.4)")
    for task in (proposals, boxes):
        task.add_argument("--model", default=DEFAULT_MODEL, help=model_help + " (default: default)")
        task.add_argument("--data", required=True, metavar="NAME[:SPLIT]|PATH",
                          help="a dataset of --data-root (split default: eval) or a dataset path")
        task.add_argument("--data-root", default="../shared/data", help="folder of the shared datasets")
        task.add_argument("--limit", type=COUNT, help="first N images only")
        task.add_argument("-o", "--output", required=True,
                          help="output folder: results.json, results.md, a PNG plot (proposals: recall_iou.png, "
                               "boxes: precision_recall.png), per-image results as .jsonl (a rerun resumes)")
    _add_generator_options(proposals)
    _needs(proposals, "eval")
    proposals.set_defaults(run=cmd_eval_proposals)
    boxes.add_argument("--detections", help="COCO results JSON of boxes: [{image_id, bbox [x, y, w, h], score}]; "
                                            "image_id is the image's name in the dataset (default: ground-truth boxes)")
    _add_device_option(boxes)
    _needs(boxes, "eval")
    boxes.set_defaults(run=cmd_eval_boxes)

    edges = tasks.add_parser("edges", help="edge detection from a 16x16 grid of point prompts, scored by the "
                                           "BSDS500 boundary benchmark: ODS, OIS, AP, R50 (the paper's zero-shot "
                                           "edge detection)")
    edges.add_argument("--model", default=DEFAULT_MODEL, help=model_help + " (default: default)")
    edges.add_argument("--data", default="bsds500", metavar="NAME[:SPLIT]|PATH",
                       help="a dataset with human boundary maps (default: bsds500, its test split)")
    edges.add_argument("--data-root", default="../shared/data", help="folder of the shared datasets")
    edges.add_argument("--limit", type=COUNT, help="first N images only")
    edges.add_argument("--points-per-side", type=COUNT, default=16, help="grid points along each side (default 16)")
    edges.add_argument("--nms-thresh", type=FRACTION, default=0.7,
                       help="box IoU above which NMS drops the lower-scored duplicate mask (default 0.7)")
    edges.add_argument("--thresholds", type=_number_type(integer=True, low=2), default=99,
                       help="edge-strength thresholds of the precision-recall curve (default 99, the benchmark's)")
    edges.add_argument("--baselines", action="store_true",
                       help="also score Sobel and Canny edges, and each annotator against the others (human)")
    _add_device_option(edges)
    edges.add_argument("-o", "--output", required=True,
                       help="output folder: results.json, results.md, precision_recall.png, edge maps as PNG in "
                            "edges/ (baselines: edges-NAME/), per-image counts as .jsonl (a rerun resumes)")
    _needs(edges, "eval")
    edges.set_defaults(run=cmd_eval_edges)

    stats = tasks.add_parser("stats", help="mask statistics of a dataset as PNG plots (paper figures 5-6)")
    stats.add_argument("--data", required=True, metavar="NAME[:SPLIT]|PATH",
                       help="a dataset of --data-root (split default: all) or a dataset path, e.g. "
                            "a folder written by `segany auto`")
    stats.add_argument("--data-root", default="../shared/data", help="folder of the shared datasets")
    stats.add_argument("--limit", type=COUNT, help="first N images only")
    stats.add_argument("-o", "--output", required=True,
                       help="output folder: results.json, results.md, masks_per_image.png, relative_size.png, "
                            "concavity.png, centres.png, per-image results as .jsonl (a rerun resumes)")
    _needs(stats, "eval")
    stats.set_defaults(run=cmd_eval_stats)

    onnx = sub.add_parser("export-onnx", help="ONNX graphs: the prompt encoder and mask decoder with the official "
                                               "web demo's inputs and outputs, and the image encoder")
    onnx.add_argument("--model", default=DEFAULT_MODEL, help=model_help + " (default: default)")
    onnx.add_argument("--single-mask", action="store_true",
                      help="one mask per prompt (best of 3 for a single point, else the single-mask output)")
    onnx.add_argument("--stability-score", action="store_true",
                      help="return stability scores instead of predicted IoU")
    onnx.add_argument("--hq-token-only", action="store_true",
                      help="SAM-HQ models: every mask is the HQ token's alone (its predictor's hq_token_only)")
    onnx.add_argument("--encoder", action="store_true",
                      help="also the image encoder (input: the resized, normalised, padded image)")
    onnx.add_argument("--quantize", action="store_true", help="also int8 versions (dynamic quantisation): *-int8.onnx")
    onnx.add_argument("-o", "--output", required=True, help="output folder: decoder.onnx [encoder.onnx]")
    _needs(onnx, "onnx")
    onnx.set_defaults(run=cmd_export_onnx)

    engine = sub.add_parser("engine", help="automatic annotation of large collections on a Ray cluster")
    engine_sub = engine.add_subparsers(dest="action", required=True)
    run = engine_sub.add_parser("run", help="SA-1B shards and a manifest for every image of INPUT (resumable)")
    run.add_argument("input", help="a folder (recursive), a glob, or a .txt / .parquet list of paths or URLs "
                                   "(any fsspec filesystem: s3://, gs://... when installed)")
    run.add_argument("-o", "--output", required=True, help="output folder or URL: shards/, manifest/, manifest.parquet")
    run.add_argument("--model", default=DEFAULT_MODEL, help=model_help + " (default: default); every node must read it")
    run.add_argument("--min-area", type=SIZE, default=0, help="drop masks smaller than this many pixels (default 0)")
    run.add_argument("--shard-size", type=COUNT, default=100, help="images per shard (default 100)")
    run.add_argument("--format", choices=("tar", "parquet"), default="tar", help="shard format (default tar)")
    run.add_argument("--dataset", action="store_true",
                     help="also write OUT/dataset/: image + SA-1B JSON pairs that segany train reads")
    run.add_argument("--workers", type=COUNT, default=1, help="model actors (default 1)")
    run.add_argument("--threads", type=COUNT, default=1, help="torch threads per actor (default 1)")
    run.add_argument("--gpus", type=_number_type(low=0), default=0.0, help="GPUs per actor (default 0: CPU)")
    run.add_argument("--address", help="Ray cluster to join (default: start Ray on this machine)")
    _add_generator_options(run, device=False)
    _needs(run, "engine")
    run.set_defaults(run=cmd_engine_run)

    db_help = "database URL: sqlite:///FILE or postgresql://USER@HOST/DB (default: sqlite annotations.db here)"
    serve = sub.add_parser("serve", help="the annotation app: a browser tool whose mask decoder runs in the page")
    serve.add_argument("--images", required=True, help="folder of images to annotate (subfolders included)")
    serve.add_argument("--db", help=db_help)
    serve.add_argument("--model", default=DEFAULT_MODEL, help=model_help + " (default: default)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=PORT, default=8000, help="port (default 8000)")
    serve.add_argument("--cache", help="folder for embeddings and the ONNX decoder (default ~/.cache/segany/server)")
    serve.add_argument("--prefill-points-per-side", type=COUNT, default=32, help="prefill grid (default 32)")
    serve.add_argument("--prefill-iou-thresh", type=FRACTION, default=0.88,
                       help="prefill keeps masks above this predicted IoU (default 0.88)")
    serve.add_argument("--prefill-stability-thresh", type=FRACTION, default=0.95,
                       help="...and at least this stability score (default 0.95)")
    serve.add_argument("--max-body-bytes", type=COUNT,
                       help="refuse larger requests (413; default: 1 MiB, or 2 bits per pixel of the largest image)")
    serve.add_argument("--bf16", action="store_true", help="image encoder in bfloat16 (faster on recent CPUs)")
    _needs(serve, "server")
    serve.set_defaults(run=cmd_serve, bf16_decoder=False)

    people = sub.add_parser("annotators", help="annotators of the app and their tokens")
    people.add_argument("action", choices=("add", "list", "revoke"))
    people.add_argument("name", nargs="?", help="annotator name (add, revoke)")
    people.add_argument("--db", help=db_help)
    _needs(people, "server")
    people.set_defaults(run=cmd_annotators)

    annotations = sub.add_parser("annotations", help="the app's saved masks")
    annotations_sub = annotations.add_subparsers(dest="action", required=True)
    export = annotations_sub.add_parser("export", help="SA-1B JSON per image (OUT/sa1b/) and COCO instances JSON "
                                                       "(OUT/coco.json)")
    export.add_argument("--images", required=True, help="the folder given to segany serve")
    export.add_argument("--db", help=db_help)
    export.add_argument("-o", "--output", required=True, help="output folder")
    _needs(export, "server")
    export.set_defaults(run=cmd_annotations_export)

    conv = sub.add_parser("convert", help="convert weights between official .pth and segany .safetensors")
    conv.add_argument("source", help=model_help)
    conv.add_argument("destination", help="output file: .safetensors or .pth")
    conv.set_defaults(run=cmd_convert)

    average = sub.add_parser("average", help="average the weights of checkpoints fine-tuned from one start "
                             "(a model soup)")
    average.add_argument("checkpoints", nargs="+", help="two or more checkpoints of one architecture: " + model_help)
    average.add_argument("-o", "--output", required=True, help="output .safetensors or .pth file")
    average.set_defaults(run=cmd_average)

    init = sub.add_parser("init", help="write a randomly initialised model")
    init.add_argument("config", choices=sorted(CONFIGS), help="architecture")
    init.add_argument("-o", "--output", required=True, help="output .safetensors or .pth file")
    init.add_argument("--seed", type=int, default=0)
    init.set_defaults(run=cmd_init)

    info = sub.add_parser("info", help="print the architecture of a checkpoint")
    info.add_argument("checkpoint", help=model_help)
    info.set_defaults(run=cmd_info)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "extra", None):
            require(args.extra, args.command_name)
        return args.run(args) or 0
    except SegAnyError as err:
        print(f"segany: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of our output went away: nothing more to say to it
        sys.stdout = open(os.devnull, "w")
        print("segany: error: output closed before the end (broken pipe)", file=sys.stderr)
        return 2
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        print(f"segany: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
