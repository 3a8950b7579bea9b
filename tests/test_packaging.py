"""The sdist and wheel, installed from the wheel into fresh virtual environments outside the
checkout: what `pip install segany` and `pip install 'segany[server,engine]'` give a user."""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest
from PIL import Image

import segany
from segany.cli import build_parser
from segany.extras import EXTRAS
from segany.testing.server import click_image, free_port, wait_ready

from conftest import REPO

pytestmark = pytest.mark.slow

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# A command of each extra, with arguments that parse (none of them gets further than the check).
EXTRA_COMMANDS = {
    "server": [["serve", "--images", "."], ["annotators", "list"], ["annotations", "export", "--images", ".", "-o", "x"]],
    "engine": [["engine", "run", ".", "-o", "x"]],
    "train": [["train", "config.yaml"], ["pseudo-label", "--data", "pennfudan", "-o", "x"]],
    "eval": [["eval", "prompts", "--data", "pennfudan", "-o", "x"]],
    "onnx": [["export-onnx", "-o", "x"]],
}


def clean_env() -> dict:
    """This environment without what would point a command back at the checkout or its venv."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SEGANY_ORT_WEB", "VIRTUAL_ENV")}


def run(command, cwd=None) -> subprocess.CompletedProcess:
    """`command` in `clean_env()`, its output captured."""
    return subprocess.run([str(c) for c in command], cwd=cwd, env=clean_env(), capture_output=True, text=True)


def check(command, cwd=None) -> str:
    """`run`, failing the test with the output unless the command succeeds; its stdout."""
    result = run(command, cwd)
    assert result.returncode == 0, f"{command}: {result.stdout}\n{result.stderr}"
    return result.stdout


def requirement_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower().replace("_", "-")


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(wheel, sdist) made by `python -m build` from the checkout."""
    out = tmp_path_factory.mktemp("dist")
    check([sys.executable, "-m", "build", "--outdir", out, REPO])
    [wheel], [sdist] = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    return wheel, sdist


def make_venv(root: Path, requirement: str) -> Path:
    """A virtual environment with this torch and `requirement`; its bin folder."""
    check([sys.executable, "-m", "venv", root])
    check([root / "bin" / "pip", "install", "-q", f"torch=={importlib.metadata.version('torch')}", requirement])
    return root / "bin"


@pytest.fixture(scope="module")
def core(dists, tmp_path_factory) -> Path:
    return make_venv(tmp_path_factory.mktemp("core-venv"), str(dists[0]))


@pytest.fixture(scope="module")
def full(dists, tmp_path_factory) -> Path:
    return make_venv(tmp_path_factory.mktemp("full-venv"), f"{dists[0]}[server,engine]")


@pytest.fixture
def workdir(tmp_path, shared_data) -> Path:
    """A folder outside the checkout with two photos in images/."""
    (tmp_path / "images").mkdir()
    shutil.copy(REPO / "examples" / "chelsea.png", tmp_path / "images")
    shutil.copy(shared_data / "examples" / "dog.jpg", tmp_path / "images")
    return tmp_path


def test_the_wheel_carries_the_model_the_page_and_its_licences(dists):
    wheel, sdist = dists
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"segany-{segany.__version__}.dist-info/METADATA").decode()
        pinned = json.loads(archive.read("segany/server/web/package-lock.json"))
        version = archive.read("segany/server/vendor/ort/VERSION").decode().strip()
    lock = pinned["packages"]["node_modules/onnxruntime-web"]["version"]
    assert version == lock
    assert {"segany/weights/default.safetensors", "segany/server/static/index.html",
            "segany/server/static/decoder.js", "segany/server/vendor/ort/ort.wasm.min.mjs",
            "segany/server/vendor/ort/ort-wasm-simd-threaded.wasm", "segany/server/vendor/ort/LICENSE"} <= names
    assert not any("node_modules" in name or name.startswith("tests/") for name in names)
    # only what the page loads: one wasm build of onnxruntime-web
    assert len([n for n in names if n.startswith("segany/server/vendor/ort/")]) == 5
    assert "License-Expression: Apache-2.0 AND MIT" in metadata
    for licence in ("LICENSE", "NOTICE", "segany/server/web/onnxruntime-web.LICENSE"):
        assert f"License-File: {licence}" in metadata
        assert f"segany-{segany.__version__}.dist-info/licenses/{licence}" in names
    assert sdist.name == f"segany-{segany.__version__}.tar.gz"


def test_the_core_install_segments_outside_the_checkout(core, workdir):
    site = check([core / "python", "-c", "import segany; print(segany.__file__)"], workdir)
    assert str(core.parent) in site and str(REPO) not in site
    assert check([core / "segany", "--version"], workdir).strip() == f"segany {segany.__version__}"
    listed = check([core / "segany", "--help"], workdir)
    commands = build_parser()._subparsers._group_actions[0].choices
    assert all(name in listed for name in commands)

    printed = check([core / "segany", "segment", "images/chelsea.png", "--point", "220,150", "-o", "out"], workdir)
    assert "predicted IoU" in printed and (workdir / "out" / "chelsea_mask.png").is_file()
    check([core / "segany", "auto", "images", "-o", "auto"], workdir)
    records = sorted(p.name for p in (workdir / "auto").glob("*.json"))
    assert records == ["chelsea.json", "dog.json"]
    record = json.loads((workdir / "auto" / "dog.json").read_text())
    assert (record["image"]["width"], record["image"]["height"]) == Image.open(workdir / "images" / "dog.jpg").size


def test_the_core_install_has_no_extra_and_says_how_to_get_each(core, workdir):
    installed = {requirement_name(line) for line in
                 check([core / "pip", "list", "--format", "freeze"]).splitlines() if "==" in line}
    # What torch itself depends on (fsspec) is the core's, whatever extra also names it.
    torch_needs = {requirement_name(r) for r in importlib.metadata.requires("torch") or [] if "extra ==" not in r}
    named_by_extras = {requirement_name(r) for extra in EXTRAS
                       for r in PYPROJECT["project"]["optional-dependencies"][extra] if not r.startswith("segany")}
    assert not (installed & named_by_extras) - torch_needs
    for extra, commands in EXTRA_COMMANDS.items():
        for command in commands:
            result = run([core / "segany", *command], workdir)
            assert result.returncode == 2, command
            [line] = result.stderr.splitlines()
            assert line.endswith(f"pip install 'segany[{extra}]'"), line


def test_every_extra_of_the_package_is_checked_by_its_commands():
    """segany.extras.EXTRAS and pyproject.toml's extras name the same things."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(EXTRAS) | {"all", "test"} == set(extras)
    assert extras["all"] == [f"segany[{','.join(EXTRAS)}]"]
    assert set(EXTRA_COMMANDS) == set(EXTRAS)

    def requirements(extra: str) -> set:
        named = set()
        for requirement in extras[extra]:
            included = re.fullmatch(r"segany\[(.+)\]", requirement)
            named |= set.union(*map(requirements, included.group(1).split(","))) if included else \
                {requirement_name(requirement)}
        return named

    providers = importlib.metadata.packages_distributions()
    for extra, modules in EXTRAS.items():
        for module in modules:
            assert {d.lower() for d in providers[module]} & requirements(extra), (extra, module)


def test_the_wheel_serves_the_page_without_npm(full, workdir, chromium, screenshots):
    db = f"sqlite:///{workdir / 'annotations.db'}"
    ort = check([full / "python", "-c", "from segany.server import find_ort_web; print(find_ort_web())"], workdir)
    assert ort.strip().startswith(str(full.parent))
    token = check([full / "segany", "annotators", "add", "packager", "--db", db], workdir).split("token ")[1].split()[0]
    port = free_port()
    server = subprocess.Popen([str(full / "segany"), "serve", "--images", "images", "--db", db, "--port", str(port),
                               "--cache", str(workdir / "cache")], cwd=workdir, env=clean_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "segany serve did not answer"
                time.sleep(0.5)
        page = chromium.new_context(viewport={"width": 1280, "height": 800}).new_page()
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(f"{url}/?token={token}")
        wait_ready(page)
        click_image(page, 220, 150)
        page.screenshot(path=screenshots / "wheel-clicked.png")
        assert int(page.evaluate("document.body.dataset.maskPixels")) > 0
        assert errors == []
    finally:
        server.terminate()
        server.wait(30)


def test_the_wheel_runs_the_engine(full, workdir):
    printed = check([full / "segany", "engine", "run", "images", "-o", "engine"], workdir)
    assert "2 image(s) segmented" in printed and "0 failed" in printed, printed
    assert (workdir / "engine" / "manifest.parquet").is_file() and list((workdir / "engine" / "shards").iterdir())
