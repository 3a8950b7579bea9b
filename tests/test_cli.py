"""`segany` commands: outputs a person and a program can use, and one-line errors."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segany
from conftest import MICRO, REPO
from segany.cli import main
from segany.data import read_sa1b
from segany.masks import rle_to_mask

EXAMPLE = REPO / "examples" / "chelsea.png"  # 451 x 300


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "micro.safetensors"
    segany.save_model(segany.random_model(MICRO, seed=2), path)
    return path


def run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_segment_writes_masks_overlay_and_json(tmp_path, capsys, model_file):
    code, out, err = run(capsys, "segment", EXAMPLE, "--point", "200,150", "--point", "50,40,0",
                         "--box", "100,50,400,290", "--model", model_file, "-o", tmp_path)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chelsea.json", "chelsea_mask.png", "chelsea_overlay.png"]
    result = json.loads((tmp_path / "chelsea.json").read_text())
    assert result["image"] == {"file_name": "chelsea.png", "width": 451, "height": 300}
    assert result["prompt"] == {"points": [[200, 150], [50, 40]], "labels": [1, 0],
                                "box": [100, 50, 400, 290], "multimask": False}
    (record,) = result["masks"]
    png = np.asarray(Image.open(tmp_path / "chelsea_mask.png")) > 0
    assert np.array_equal(rle_to_mask(record["segmentation"]), png)
    assert record["area"] == int(png.sum())

    # The JSON holds exactly what the predictor gives for these prompts.
    predictor = segany.SamPredictor(segany.load_model(model_file))
    predictor.set_image(np.asarray(Image.open(EXAMPLE).convert("RGB")))
    masks, scores, _ = predictor.predict(np.array([[200, 150], [50, 40]]), np.array([1, 0]),
                                         np.array([100, 50, 400, 290]), multimask_output=False)
    assert np.array_equal(masks[0], png)
    assert record["predicted_iou"] == pytest.approx(float(scores[0]), abs=1e-6)
    overlay = Image.open(tmp_path / "chelsea_overlay.png")
    assert overlay.size == (451, 300) and overlay.mode == "RGB"
    assert "chelsea_mask.png" in out


def test_multimask_writes_three_masks_best_first(tmp_path, capsys, model_file):
    code, _, err = run(capsys, "segment", EXAMPLE, "--point", "200,150", "--multimask",
                       "--model", model_file, "-o", tmp_path)
    assert code == 0, err
    records = json.loads((tmp_path / "chelsea.json").read_text())["masks"]
    assert [r["file"] for r in records] == [f"chelsea_mask{i}.png" for i in range(3)]
    scores = [r["predicted_iou"] for r in records]
    assert scores == sorted(scores, reverse=True)
    for r in records:
        png = np.asarray(Image.open(tmp_path / r["file"])) > 0
        assert np.array_equal(rle_to_mask(r["segmentation"]), png)


@pytest.mark.parametrize(
    "prompt, message",
    [
        (["--point", "451,10"], "--point 451,10 lies outside the image (width 451, height 300)"),
        (["--point", "10,-1"], "--point 10,-1 lies outside the image"),
        (["--point", "10,a"], "--point '10,a': expected X,Y or X,Y,LABEL"),
        (["--point", "10,10,2"], "LABEL must be 1 (foreground) or 0 (background)"),
        (["--box", "300,10,100,200"], "--box: x1 (100) must be greater than x0 (300)"),
        (["--box", "10,200,100,100"], "--box: y1 (100) must be greater than y0 (200)"),
        (["--box", "10,10,500,100"], "extends outside the image"),
        (["--box", "1,2,3"], "--box '1,2,3': expected X0,Y0,X1,Y1"),
        ([], "give at least one --point"),
    ],
)
def test_bad_prompts_are_one_line_errors_and_write_nothing(tmp_path, capsys, model_file, prompt, message):
    out_dir = tmp_path / "out"
    code, _, err = run(capsys, "segment", EXAMPLE, *prompt, "--model", model_file, "-o", out_dir)
    assert code == 2
    assert err.startswith("segany: error: ") and message in err and err.count("\n") == 1
    assert not out_dir.exists()


@pytest.mark.parametrize("content, message", [
    (b"", "cannot read image"),
    (b"GIF89a broken", "cannot read image"),
    (None, "image not found"),
])
def test_unreadable_images_are_reported(tmp_path, capsys, model_file, content, message):
    image = tmp_path / "broken.jpg"
    if content is not None:
        image.write_bytes(content)
    code, _, err = run(capsys, "segment", image, "--point", "1,1", "--model", model_file, "-o", tmp_path / "out")
    assert code == 2 and message in err and "broken.jpg" in err and err.count("\n") == 1


def test_truncated_image_is_reported(tmp_path, capsys, model_file):
    image = tmp_path / "cut.png"
    image.write_bytes(EXAMPLE.read_bytes()[:5000])
    code, _, err = run(capsys, "segment", image, "--point", "1,1", "--model", model_file, "-o", tmp_path / "out")
    assert code == 2 and "cannot read image" in err and "cut.png" in err


def test_bad_model_is_reported(tmp_path, capsys):
    code, _, err = run(capsys, "segment", EXAMPLE, "--point", "1,1", "--model", tmp_path / "none.pth", "-o", tmp_path)
    assert code == 2 and err == f"segany: error: checkpoint not found: {tmp_path / 'none.pth'}\n"


def test_sixteen_bit_and_grayscale_files_segment(tmp_path, capsys, model_file):
    rgb = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    gray16 = (rgb[:, :, 1].astype(np.uint16) * 257)
    path = tmp_path / "gray16.png"
    Image.fromarray(gray16).save(path)
    code, _, err = run(capsys, "segment", path, "--point", "200,150", "--model", model_file, "-o", tmp_path / "out")
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "gray16.json").read_text())["image"]["width"] == 451


def test_init_convert_and_info(tmp_path, capsys, model_file):
    pth = tmp_path / "micro.pth"
    code, _, err = run(capsys, "convert", model_file, pth)
    assert code == 0, err
    back = tmp_path / "back.safetensors"
    assert run(capsys, "convert", pth, back)[0] == 0
    for key, tensor in torch.load(pth).items():
        assert torch.equal(tensor, segany.load_model(back).state_dict()[key])
    code, out, _ = run(capsys, "info", pth)
    assert code == 0 and segany.SamConfig.from_dict(json.loads(out)["config"]) == MICRO
    tiny = tmp_path / "tiny.safetensors"
    code, out, _ = run(capsys, "init", "vit_tiny", "-o", tiny, "--seed", "4")
    assert code == 0 and segany.load_model(tiny).config == segany.CONFIGS["vit_tiny"]
    mobile = tmp_path / "mobile.safetensors"
    assert run(capsys, "init", "mobilenet_v2", "-o", mobile)[0] == 0
    code, out, _ = run(capsys, "info", mobile)
    info = json.loads(out)
    assert code == 0 and info["architecture"] == "mobilenet_v2" and info["encoder"].startswith("mobilenet_v2")
    assert info["parameters"] == sum(info["parameters_by_part"].values())
    assert 1.9e6 < info["parameters_by_part"]["image_encoder"] < 2.1e6
    code, _, err = run(capsys, "convert", mobile, tmp_path / "mobile.pth")
    assert code != 0 and "use .safetensors" in err and not (tmp_path / "mobile.pth").exists()


@pytest.mark.parametrize("name, family, parameters", [("vit_t", "MobileSAM", 10.13e6), ("hq_vit_t", "SAM-HQ", 10.58e6)])
def test_info_names_the_family_of_a_reference_checkpoint(tmp_path, capsys, name, family, parameters):
    """The released layouts (.pth, no config): family, size and parameters from the tensors."""
    pth = tmp_path / f"{name}.pth"
    assert run(capsys, "init", name, "-o", pth)[0] == 0
    code, out, _ = run(capsys, "info", pth)
    info = json.loads(out)
    assert code == 0 and info["family"] == family and info["architecture"] == name
    assert info["encoder"].startswith("TinyViT, stage widths [64, 128, 160, 320]")
    assert info["parameters"] == pytest.approx(parameters, rel=1e-3)


def test_console_script_runs_the_readme_demo(tmp_path):
    """The installed `segany` entry point, as the README uses it."""
    exe = shutil.which("segany") or str(Path(sys.executable).parent / "segany")
    model = tmp_path / "tiny.safetensors"
    subprocess.run([exe, "init", "vit_tiny", "-o", model], check=True, capture_output=True)
    done = subprocess.run([exe, "segment", EXAMPLE, "--point", "220,150", "--model", model, "-o", tmp_path / "out"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "chelsea_overlay.png").exists()


def test_output_path_that_is_a_file_is_refused(tmp_path, capsys, model_file):
    target = tmp_path / "taken"
    target.write_text("")
    code, _, err = run(capsys, "segment", EXAMPLE, "--point", "1,1", "--model", model_file, "-o", target)
    assert code == 2 and "exists and is not a folder" in err


def test_bf16_flag_segments(tmp_path, capsys, model_file):
    code, _, err = run(capsys, "segment", EXAMPLE, "--point", "200,150", "--bf16", "--model", model_file, "-o", tmp_path)
    assert code == 0, err
    assert (tmp_path / "chelsea_mask.png").exists()


LOOSE = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / "cat.png")
    Image.open(EXAMPLE).convert("L").resize((200, 120)).save(folder / "small.jpg")
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("not listed: not an image suffix")
    return folder


def test_auto_writes_sa1b_per_image_and_reports_corrupt_ones(tmp_path, capsys, model_file, image_folder):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "auto", image_folder, "--model", model_file, "-o", out, "--overlay", *LOOSE)
    assert code == 1
    assert "skipping" in err and "broken.jpg" in err
    assert sorted(p.name for p in out.iterdir()) == ["cat.json", "cat_overlay.png", "small.json", "small_overlay.png"]
    assert "2 image(s) segmented" in stdout and "1 failed" in stdout

    image, annotations = read_sa1b(out / "cat.json")
    assert image["file_name"] == "cat.png" and (image["width"], image["height"]) == (451, 300)
    generator = segany.SamAutomaticMaskGenerator(segany.load_model(model_file), points_per_side=4,
                                                 pred_iou_thresh=0, stability_score_thresh=0, output_mode="coco_rle")
    expected = generator.generate(np.asarray(Image.open(EXAMPLE).convert("RGB")))
    assert len(annotations) == len(expected) > 0
    for annotation, record in zip(annotations, expected):
        assert annotation["segmentation"] == record["segmentation"]
        assert annotation["bbox"] == record["bbox"] and annotation["area"] == record["area"]


def test_auto_resumes_without_redoing_finished_images(tmp_path, capsys, model_file, image_folder):
    out = tmp_path / "out"
    run(capsys, "auto", image_folder / "cat.png", "--model", model_file, "-o", out, *LOOSE)
    before = (out / "cat.json").stat().st_mtime_ns
    code, stdout, _ = run(capsys, "auto", image_folder, "--model", model_file, "-o", out, *LOOSE)
    assert code == 1  # broken.jpg
    assert (out / "cat.json").stat().st_mtime_ns == before
    assert "1 image(s) segmented" in stdout and "1 already done" in stdout
    assert (out / "small.json").exists()


def test_auto_reads_a_list_of_paths(tmp_path, capsys, model_file, image_folder):
    listing = image_folder / "list.txt"
    listing.write_text("# images to do\ncat.png\n\nsmall.jpg\n")
    code, _, err = run(capsys, "auto", listing, "--model", model_file, "-o", tmp_path / "out", *LOOSE)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cat.json", "small.json"]


def test_auto_input_errors_are_one_line(tmp_path, capsys, model_file, image_folder):
    code, _, err = run(capsys, "auto", tmp_path / "nothing", "--model", model_file, "-o", tmp_path / "o")
    assert code == 2 and err.strip() == f"segany: error: {tmp_path / 'nothing'}: no such image, folder or list"
    Image.open(EXAMPLE).save(image_folder / "cat.jpg")
    code, _, err = run(capsys, "auto", image_folder, "--model", model_file, "-o", tmp_path / "o")
    assert code == 2 and "would both be written as cat.json" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "auto", image_folder / "cat.png", "--model", model_file, "-o", tmp_path / "o",
                       "--points-per-side", "0")
    assert code == 2 and err.strip() == "segany: error: auto: argument --points-per-side: must be in [1, 4096], got 0 (see segany auto --help)"


def test_the_bundled_model_is_the_default(tmp_path):
    model = segany.load_model("default")
    assert model.config == segany.CONFIGS["mobilenet_v2_hr_896"]
    assert main(["segment", str(REPO / "examples" / "chelsea.png"), "--point", "220,150", "-o", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "chelsea.json").read_text())
    assert record["model"] == "default"
    mask = np.asarray(Image.open(tmp_path / "chelsea_mask.png")) > 0
    assert 0 < mask.mean() < 1  # a trained model: a mask, neither empty nor everything


def test_eval_prompts_writes_scores_and_a_table(tmp_path, micro_checkpoint, shared_data):
    args = ["eval", "prompts", "--model", str(micro_checkpoint), "--data", "pennfudan:eval",
            "--data-root", str(shared_data), "--limit", "1", "--baselines", "--clicks", "3", "-o", str(tmp_path)]
    assert main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["data"] == "pennfudan:eval" and results["scores"]["objects"] > 0
    assert 0 <= results["scores"]["box"] <= 1 and 0 < results["baselines"]["GrabCut box"] <= 1
    assert set(results["baselines"]) == {"GrabCut box", "GrabCut point", "random walker point"}
    assert len(results["scores"]["interactive"]) == 3
    assert Image.open(tmp_path / "interactive.png").format == "PNG"
    table = (tmp_path / "results.md").read_text().splitlines()
    assert len(table) == 3 + 1 + 5 and table[2].startswith("| pennfudan:eval |") and table[0].count("|") == 11
    assert table[4] == "| points | mIoU |" and table[-1].startswith("| 3 | ")
    assert main(args) == 0  # again: every image read back from prompts.jsonl and baselines.jsonl
    again = json.loads((tmp_path / "results.json").read_text())
    assert (again["scores"], again["baselines"]) == (results["scores"], results["baselines"])
    assert len((tmp_path / "prompts.jsonl").read_text().splitlines()) == 1 + 1
    assert main(args[:4] + ["--data", "nosuch"] + args[6:]) == 2  # one-line error, no traceback


def test_version_and_a_command_without_its_extra(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"segany {segany.__version__}"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real_find_spec(name, *a))
    assert main(["engine", "run", str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == ("segany: error: segany engine run needs the [engine] extra (ray not installed): "
                                      "pip install 'segany[engine]'\n")
    assert not (tmp_path / "out").exists()
