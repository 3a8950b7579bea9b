"""Bad input on the command line: exit status 2 and one line naming the problem, nothing written.

Placeholders in the arguments: {model} a working checkpoint, {image} a working photo,
{bad:NAME} a file of `hostile.bad_images`, {ckpt:NAME} one of `hostile.bad_checkpoints`,
{out} an output folder that must stay empty, {tmp} a scratch folder.
"""

import json
import re
from pathlib import Path

import pytest

from conftest import REPO
from hostile import Exploit, hostile_checkpoints, hostile_datasets, hostile_images, micro_model_file  # noqa: F401
from segany.cli import main

IMAGE = REPO / "examples" / "chelsea.png"  # 451 x 300
PROGRESS_BAR = re.compile(r"^[\w -]+: +\d+%\|")  # tqdm's lines on stderr, before the error

SEGMENT = ["segment", "{image}", "--model", "{model}", "-o", "{out}"]
AUTO = ["auto", "{image}", "--model", "{model}", "-o", "{out}"]
PROMPTS = ["eval", "prompts", "--model", "{model}", "--data", "synthetic", "-o", "{out}"]

CASES = [
    # images
    *[(f"image-{name}", ["segment", f"{{bad:{name}}}", "--point", "1,1", "--model", "{model}", "-o", "{out}"],
       rf"cannot read image .*{re.escape(name)}: {message}")
      for name, message in [
          ("bomb.png", r"Image size \(900000000 pixels\) exceeds limit"),
          ("large.png", r"12000x12000 pixels is more than the 134217728 allowed"),
          ("short.png", r"truncated PNG \(1010 of 1010000 bytes of image data\)"),
          ("truncated.png", "truncated PNG"),
          ("truncated.jpg", "image file is truncated"),
          ("empty.png", "not an image file or an unsupported format"),
          ("text.png", "not an image file or an unsupported format"),
          ("html.jpg", "not an image file or an unsupported format"),
          ("zeros.bmp", "not an image file or an unsupported format"),
      ]],
    ("image-folder", ["segment", "{bad:folder.png}", "--point", "1,1", "--model", "{model}", "-o", "{out}"],
     r"folder.png: is a directory, not an image"),
    ("image-missing", ["segment", "{tmp}/nothing.png", "--point", "1,1", "--model", "{model}", "-o", "{out}"],
     r"image not found: .*nothing.png"),
    # point and box prompts
    *[(f"point-{i}", SEGMENT + ([f"--point{text}"] if text.startswith("=") else ["--point", text]), message) for i, (text, message) in enumerate([
        ("abc", r"--point 'abc': expected X,Y or X,Y,LABEL"),
        ("1", r"--point '1': expected X,Y or X,Y,LABEL"),
        ("1,2,1,4", r"--point '1,2,1,4': expected X,Y or X,Y,LABEL"),
        ("nan,1", r"--point 'nan,1': expected X,Y"),
        ("inf,2", r"--point 'inf,2': expected X,Y"),
        ("1,-inf", r"--point '1,-inf': expected X,Y"),
        ("1,2,5", r"--point '1,2,5': LABEL must be 1 \(foreground\) or 0 \(background\)"),
        ("1,2,0.5", r"LABEL must be 1 \(foreground\) or 0 \(background\)"),
        ("1,2,-1", r"LABEL must be 1 \(foreground\) or 0 \(background\)"),
        ("=-1,5", r"--point -1,5 lies outside the image \(width 451, height 300\)"),
        ("451,5", r"--point 451,5 lies outside the image"),
        ("5,300", r"--point 5,300 lies outside the image"),
        ("9e99,5", r"lies outside the image"),
        ("", r"--point '': expected X,Y"),
        ("1,,2", r"--point '1,,2': expected"),
    ])],
    *[(f"box-{i}", SEGMENT + ([f"--box{text}"] if text.startswith("=") else ["--box", text]), message) for i, (text, message) in enumerate([
        ("1,2,3", r"--box '1,2,3': expected X0,Y0,X1,Y1"),
        ("a,b,c,d", r"--box 'a,b,c,d': expected X0,Y0,X1,Y1"),
        ("nan,0,1,1", r"--box 'nan,0,1,1': expected"),
        ("5,5,1,10", r"--box: x1 \(1\) must be greater than x0 \(5\)"),
        ("5,5,10,5", r"--box: y1 \(5\) must be greater than y0 \(5\)"),
        ("0,0,9999,10", r"--box 0,0,9999,10 extends outside the image"),
        ("=-5,0,10,10", r"extends outside the image"),
    ])],
    ("no-prompt", SEGMENT, r"give at least one --point X,Y\[,LABEL\] or a --box"),
    ("output-is-a-file", ["segment", "{image}", "--point", "1,1", "--model", "{model}", "-o", "{image}"],
     r"-o .*chelsea.png: exists and is not a folder"),
    # devices
    *[(f"device-{name}", SEGMENT + ["--point", "1,1", "--device", name], message) for name, message in [
        ("bogus", r"argument --device: unknown device 'bogus'"),
        ("cuda", r"argument --device: device cuda: CUDA is not available on this machine"),
        ("cuda:7", r"device cuda:7: CUDA is not available"),
        ("mps", r"device mps: MPS is not available on this machine"),
        ("", r"argument --device: unknown device ''"),
        ("cpu:x", r"unknown device 'cpu:x'"),
    ]],
    # checkpoints
    *[(f"model-{name}", ["segment", "{image}", "--point", "1,1", "--model", f"{{ckpt:{name}}}", "-o", "{out}"],
       rf"{re.escape(name)}: {message}") for name, message in [
        ("bad-json.safetensors", r"bad model config in metadata"),
        ("config-list.safetensors", r"bad model config in metadata \(model config must be a mapping"),
        ("config-string-size.safetensors", r"bad model config in metadata \(model config: image_size must be an integer, got 'big'"),
        ("config-zero-depth.safetensors", r"bad model config in metadata \(model config: decoder_depth must be at least 1, got 0"),
        ("config-unknown-field.safetensors", r"bad model config in metadata \(unknown model config field\(s\): colour"),
        ("nan.safetensors", r"mask_decoder.iou_token.weight holds NaN or infinite values"),
        ("integers.safetensors", r"mask_decoder.iou_token.weight holds torch.int32 values where the model has floats"),
        ("shape.safetensors", r"does not fit the model: shape mismatch for mask_decoder.mask_tokens.weight \(checkpoint \(7, "),
        ("missing-key.safetensors", r"does not fit the model: missing keys: mask_decoder.iou_token.weight"),
        ("extra-key.safetensors", r"does not fit the model: unexpected keys: mask_decoder.extra"),
        ("truncated.safetensors", r"truncated or corrupt safetensors file"),
        ("exploit.pth", r"not a readable checkpoint \(it holds Python objects other than tensors, refused"),
        ("not-tensors.pth", r"not a state dict: non-tensor entries x"),
        ("empty.pth", r"empty file, not a checkpoint"),
        ("text.pth", r"not a checkpoint \(neither a PyTorch .pth nor a .safetensors file\)"),
    ]],
    ("model-missing", SEGMENT + ["--point", "1,1", "--model", "{tmp}/none.safetensors"],
     r"checkpoint not found: .*none.safetensors"),
    # the automatic generator's settings
    *[(f"auto-{option}-{value}", AUTO + [f"--{option}", value], rf"auto: argument --{option}: {message}")
      for option, value, message in [
          ("points-per-side", "0", r"must be in \[1, 4096\], got 0"),
          ("points-per-side", "-3", r"must be in \[1, 4096\], got -3"),
          ("points-per-side", "5000", r"must be in \[1, 4096\], got 5000"),
          ("points-per-side", "2.5", "expected an integer, got '2.5'"),
          ("points-per-side", "many", "expected an integer, got 'many'"),
          ("points-per-batch", "0", "must be at least 1, got 0"),
          ("pred-iou-thresh", "nan", "must be finite, got nan"),
          ("pred-iou-thresh", "inf", "must be finite, got inf"),
          ("pred-iou-thresh", "-0.1", r"must be in \[0, 1\], got -0.1"),
          ("pred-iou-thresh", "1.5", r"must be in \[0, 1\], got 1.5"),
          ("stability-score-thresh", "nan", "must be finite, got nan"),
          ("stability-score-thresh", "2", r"must be in \[0, 1\], got 2.0"),
          ("stability-score-offset", "-1", "must be at least 0, got -1.0"),
          ("stability-score-offset", "nan", "must be finite, got nan"),
          ("box-nms-thresh", "-1", r"must be in \[0, 1\], got -1.0"),
          ("box-nms-thresh", "1.01", r"must be in \[0, 1\], got 1.01"),
          ("crop-n-layers", "-1", "must be at least 0, got -1"),
          ("crop-nms-thresh", "nan", "must be finite, got nan"),
          ("crop-overlap-ratio", "-0.5", r"must be in \[0, 1\], got -0.5"),
          ("crop-n-points-downscale-factor", "0", "must be at least 1, got 0"),
          ("min-mask-region-area", "-5", "must be at least 0, got -5"),
          ("device", "cuda", "device cuda: CUDA is not available"),
      ]],
    ("auto-input-missing", ["auto", "{tmp}/nothing", "--model", "{model}", "-o", "{out}"],
     r"nothing: no such image, folder or list"),
    # evaluation
    *[(f"eval-prompts-{option}-{value}", PROMPTS + [f"--{option}", value], rf"argument --{option}: {message}")
      for option, value, message in [
          ("clicks", "0", "must be at least 1, got 0"),
          ("clicks", "-3", "must be at least 1, got -3"),
          ("limit", "0", "must be at least 1, got 0"),
          ("point", "middle", r"invalid choice: 'middle'"),
          ("device", "bogus", "unknown device 'bogus'"),
      ]],
    ("eval-unknown-data", ["eval", "prompts", "--model", "{model}", "--data", "nowhere", "-o", "{out}"],
     r"nowhere: neither a dataset name"),
    ("eval-edges-thresholds", ["eval", "edges", "--model", "{model}", "--thresholds", "1", "-o", "{out}"],
     r"argument --thresholds: must be at least 2, got 1"),
    ("eval-edges-points", ["eval", "edges", "--model", "{model}", "--points-per-side", "0", "-o", "{out}"],
     r"argument --points-per-side: must be at least 1, got 0"),
    ("eval-edges-nms", ["eval", "edges", "--model", "{model}", "--nms-thresh", "2", "-o", "{out}"],
     r"argument --nms-thresh: must be in \[0, 1\], got 2.0"),
    # datasets with missing or malformed fields
    *[(f"stats-{name}", ["eval", "stats", "--data", f"{{data:{name}}}", "-o", "{out}"], message)
      for name, message in [
          ("coco-no-images", r"instances.json: missing field 'images' \(a list\)"),
          ("coco-not-a-mapping", r"instances.json: missing field 'images' \(a list\)"),
          ("coco-not-json", r"instances.json: not a readable COCO JSON file"),
          ("coco-image-without-file", r"instances.json: images\[0\] needs id and file_name"),
          ("coco-annotation-without-segmentation", r"annotations\[0\] needs image_id and segmentation"),
          ("coco-annotation-of-no-image", r"annotations\[0\].image_id 9 is not an image's id"),
          ("coco-odd-polygon", r"segmentation polygons must be \[x1, y1, x2, y2, x3, y3, ...\]"),
          ("coco-text-polygon", r"segmentation polygons must be"),
          ("coco-rle-other-size", r"segmentation.size: \[10, 10\] is not the image's \[H, W\] \[300, 451\]"),
          ("coco-rle-short", r"segmentation.counts: run lengths sum to 10, not H \* W = 135300"),
          ("yolo-text", r"a.txt:1: expected 'class x1 y1 x2 y2 x3 y3 ...' \(numbers\)"),
          ("yolo-short", r"a.txt:1: expected 'class x1 y1"),
          ("yolo-nan", r"a.txt:1: expected 'class x1 y1"),
          ("yolo-even", r"a.txt:1: expected 'class x1 y1"),
          ("sa1b-short-counts", r"a.json: annotations\[0\].segmentation.counts: run lengths sum to 7"),
          ("sa1b-garbage-counts", r"a.json: annotations\[0\].segmentation.counts: character '!' at 0"),
          ("sa1b-no-width", r"a.json: missing field 'image.width'"),
          ("sa1b-text-height", r"a.json: image.height must be an integer, got '300'"),
      ]],
    *[(f"boxes-detections-{name}", ["eval", "boxes", "--model", "{model}", "--data", "synthetic", "--detections",
                                    f"{{data:detections-{name}}}", "-o", "{out}"], message)
      for name, message in [
          ("not-json", r"not-json.json: not a readable detections JSON"),
          ("not-a-list", r"not-a-list.json: \[0\] needs image_id, bbox \[x, y, w, h\] and score"),
          ("no-bbox", r"no-bbox.json: \[0\] needs image_id, bbox"),
          ("bbox-three", r"bbox-three.json: \[0\].bbox must be \[x, y, w, h\]"),
          ("bbox-negative-width", r"bbox-negative-width.json: \[0\].bbox\[2\] must be at least 0, got -3"),
          ("bbox-text", r"bbox-text.json: \[0\].bbox\[1\] must be a number, got '2'"),
          ("score-text", r"score-text.json: \[0\].score must be a number, got 'high'"),
          ("score-nan", r"score-nan.json: \[0\].score must be finite, got nan"),
          ("bbox-infinity", r"bbox-infinity.json: \[0\].bbox\[2\] must be finite, got inf"),
      ]],
    # the annotation app, checked before any model loads
    *[(f"serve-{option}-{value}", ["serve", "--images", "{tmp}", f"--{option}", value],
       rf"serve: argument --{option}: {message}") for option, value, message in [
        ("port", "-5", "must be in \\[1, 65535\\], got -5"),
        ("port", "0", "must be in \\[1, 65535\\], got 0"),
        ("port", "70000", "must be in \\[1, 65535\\], got 70000"),
        ("port", "http", "expected an integer, got 'http'"),
        ("prefill-iou-thresh", "nan", "must be finite, got nan"),
        ("prefill-stability-thresh", "-1", "must be in \\[0, 1\\], got -1.0"),
        ("prefill-points-per-side", "0", "must be at least 1, got 0"),
        ("max-body-bytes", "0", "must be at least 1, got 0"),
    ]],
    # the engine
    *[(f"engine-{option}-{value}", ["engine", "run", "{image}", "-o", "{out}", f"--{option}", value],
       rf"argument --{option}: {message}") for option, value, message in [
        ("shard-size", "0", "must be at least 1, got 0"),
        ("workers", "0", "must be at least 1, got 0"),
        ("threads", "-1", "must be at least 1, got -1"),
        ("gpus", "-1", "must be at least 0, got -1.0"),
        ("min-area", "-1", "must be at least 0, got -1"),
        ("format", "zip", r"invalid choice: 'zip'"),
    ]],
    # train options
    ("train-steps", ["train", "--steps", "0"], r"argument --steps: must be at least 1, got 0"),
    ("train-for-steps", ["train", "--for-steps", "-1"], r"argument --for-steps: must be at least 1, got -1"),
    ("train-workers", ["train", "--workers", "-2"], r"argument --workers: must be at least 0, got -2"),
    ("train-missing-config", ["train", "{tmp}/none.yaml"], r"none.yaml: No such file or directory"),
    ("unknown-command", ["paint"], r"argument command: invalid choice: 'paint'"),
    ("unknown-option", ["segment", "{image}", "-o", "{out}", "--colour", "red"], r"unrecognized arguments: --colour red"),
]


@pytest.fixture
def places(tmp_path, micro_model_file, hostile_images, hostile_checkpoints, hostile_datasets):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return {"model": str(micro_model_file), "image": str(IMAGE), "out": str(tmp_path / "out"), "tmp": str(scratch),
            **{f"bad:{k}": str(v) for k, v in hostile_images.items()},
            **{f"ckpt:{k}": str(v) for k, v in hostile_checkpoints.items()},
            **{f"data:{k}": str(v) for k, v in hostile_datasets.items()}}


def run(capsys, args, places):
    argv = [re.sub(r"\{([^}]+)\}", lambda m: places[m.group(1)], a) for a in args]
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(capsys, places, hostile_checkpoints, args, message):
    code, err = run(capsys, args, places)
    assert code == 2, err
    lines = [line for line in err.strip().replace("\r", "\n").splitlines() if not PROGRESS_BAR.search(line)]
    assert len(lines) == 1 and lines[0].startswith("segany: error: "), err
    assert re.search(message, lines[0]), lines[0]
    out = Path(places["out"])
    assert not out.exists() or not any(out.iterdir())
    assert not (hostile_checkpoints["exploit.pth"].parent / "exploited").exists()  # no code ran


def test_every_checkpoint_refused_by_load_model_is_refused_by_info_and_convert(capsys, places, hostile_checkpoints,
                                                                               tmp_path):
    for name in hostile_checkpoints:
        for args in (["info", f"{{ckpt:{name}}}"], ["convert", f"{{ckpt:{name}}}", str(tmp_path / "x.safetensors")]):
            code, err = run(capsys, args, places)
            assert code == 2 and err.startswith("segany: error: ") and name in err, (args, err)
            assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.safetensors").exists()


TRAIN_CONFIGS = [
    ("[1, 2]", r"expected a mapping of TrainConfig fields, found list"),
    ("steps: [", r"not a readable config"),
    ("colour: red", r"unknown field\(s\) colour"),
    ("steps: many", r"train config: steps must be an integer, got 'many'"),
    ("steps: 0", r"train config: steps must be at least 1, got 0"),
    ("steps: 2.5", r"train config: steps must be an integer, got 2.5"),
    ("checkpoint_every: 0", r"train config: checkpoint_every must be at least 1, got 0"),
    ("lr: .nan", r"train config: lr must be a number, got nan"),
    ("lr: -1", r"train config: lr must be above 0, got -1"),
    ("lr: '1e-3'", r"train config: lr must be a number, got '1e-3'"),
    ("datasets: [pennfudan]", r"train config: datasets must be a mapping of a string to a number"),
    ("datasets: {pennfudan: -1}", r"datasets: give at least one dataset with a positive weight"),
    ("datasets: {}", r"datasets: give at least one dataset with a positive weight"),
    ("datasets: {/nowhere/at/all: 1}", r"/nowhere/at/all: neither a dataset name"),
    ("jitter: [2, 1]", r"train config: jitter must be \[smallest, largest\] scales"),
    ("jitter: [0.5]", r"train config: jitter must be \[smallest, largest\] scales"),
    ("model: 5", r"train config: model must be a config name or a mapping of its fields, got 5"),
    ("model: {image_size: 1000}", r"model: model config: image_size 1000 is not a multiple of patch_size 16"),
    ("model: vit_giant", r"model: unknown model config 'vit_giant'"),
    ("freeze: [wheels]", r"freeze: unknown part 'wheels'"),
    ("layer_decay: 0", r"train config: layer_decay must be in \(0, 1\], got 0"),
    ("workers: -1", r"train config: workers must be at least 0, got -1"),
    ("bf16: 'yes'", r"train config: bf16 must be true or false, got 'yes'"),
    ("validate_every: -5", r"train config: validate_every must be at least 0, got -5"),
    ("decay_at: [1.5]", r"train config: decay_at must be in \[0, 1\], got 1.5"),
    ("output: 7", r"train config: output must be a string, got 7"),
]


@pytest.mark.parametrize("text, message", TRAIN_CONFIGS, ids=[t for t, _ in TRAIN_CONFIGS])
def test_bad_train_configs(capsys, tmp_path, text, message):
    config = tmp_path / "config.yaml"
    config.write_text(f"output: {tmp_path / 'run'}\n{text}\n" if not text.startswith(("[", "output")) else text)
    code, err = run(capsys, ["train", str(config)], {})
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("content, message", [
    ("truncated", r"last.pt: truncated or corrupt resume state of segany train"),
    ("exploit", r"last.pt: not a readable resume state of segany train \(it holds Python objects"),
    ("other", r"last.pt: not a resume state of segany train \(expected model, optimizer and step\)"),
])
def test_resume_refuses_bad_states_without_running_them(capsys, tmp_path, micro_model_file, content, message):
    import torch

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if content == "truncated":
        torch.save({"model": {}, "optimizer": {}, "step": 3}, run_dir / "full.pt")
        data = (run_dir / "full.pt").read_bytes()
        (run_dir / "last.pt").write_bytes(data[: len(data) // 2])
    elif content == "exploit":
        torch.save({"model": Exploit(tmp_path / "exploited"), "optimizer": {}, "step": 1}, run_dir / "last.pt")
    else:
        torch.save({"weights": torch.zeros(1)}, run_dir / "last.pt")
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"output": str(run_dir), "init": str(micro_model_file), "datasets": {"synthetic": 1}}))
    code, err = run(capsys, ["train", str(config), "--resume"], {})
    assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "exploited").exists()
