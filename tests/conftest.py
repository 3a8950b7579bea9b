import dataclasses
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segany.testing import official as reference
from segany.modeling import CONFIGS, SamConfig
from segany.server import find_ort_web
from segany.testing.server import CHROMIUM, CHROMIUM_ARGS, free_port, start_server

REPO = Path(__file__).resolve().parents[1]

# Reduced-depth vit_b: official widths, one windowed and one global block.
SMALL_VIT_B = SamConfig(encoder_depth=2, encoder_global_attn_indexes=(1,))
# SAM-HQ's decoder on the reduced-depth vit_b.
SMALL_HQ_VIT_B = dataclasses.replace(SMALL_VIT_B, decoder="hq")
# One model of each family, as the reference packages build them (tests/test_parity.py).
FAMILY_MODELS = {
    "sam": SMALL_VIT_B,
    "mobile_sam": CONFIGS["vit_t"],
    "sam_hq": SMALL_HQ_VIT_B,
    "sam_hq_tiny": CONFIGS["hq_vit_t"],
    # Full hiera_t: SAM 2's sizes are detected from the released architectures only.
    "sam2": CONFIGS["hiera_t"],
}
# A very small model for API checks that do not need official sizes.
MICRO = SamConfig(
    encoder_embed_dim=64,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    encoder_window_size=6,
    image_size=256,
    prompt_embed_dim=64,
    decoder_mlp_dim=128,
    iou_head_hidden_dim=64,
)


def shared_data_dir() -> Path:
    return Path(os.environ.get("SEGANY_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets beside the repository; CI sets SEGANY_REQUIRE_DATA=1 so absence fails."""
    path = shared_data_dir()
    if not (path / "examples").is_dir():
        if os.environ.get("SEGANY_REQUIRE_DATA") == "1":
            pytest.fail(f"shared data not found at {path} (set SEGANY_SHARED_DATA)")
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def pretrained_dir(shared_data) -> Path:
    """The ImageNet MobileNetV2 weights beside the data (shared/pretrained)."""
    path = shared_data.parent / "pretrained"
    if not (path / "mobilenet_v2_1.0_224_quant.tflite").exists():
        if os.environ.get("SEGANY_REQUIRE_DATA") == "1":
            pytest.fail(f"pretrained weights not found at {path}")
        pytest.skip(f"pretrained weights not found at {path}")
    return path


def parity_prompts(h: int, w: int) -> dict:
    """The parity tests' prompt sets, in pixels of an (h, w) image: name -> predict() keywords."""
    points = np.array([[0.45 * w, 0.5 * h], [0.7 * w, 0.3 * h], [0.2 * w, 0.8 * h]])
    box = np.array([0.25 * w, 0.3 * h, 0.75 * w, 0.85 * h])
    return {
        "one_point": dict(point_coords=points[:1], point_labels=np.array([1])),
        "pos_neg_points": dict(point_coords=points, point_labels=np.array([1, 0, 1])),
        "box": dict(box=box),
        "box_and_points": dict(box=box, point_coords=points[:2], point_labels=np.array([1, 0])),
    }


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="session")
def small_vit_b_checkpoint(tmp_path_factory) -> Path:
    """Random official-layout weights of the reduced-depth vit_b, saved as Meta saves theirs."""
    return reference.write_reference_checkpoint(SMALL_VIT_B, tmp_path_factory.mktemp("ckpt") / "small_vit_b.pth")


@pytest.fixture(scope="session")
def family_checkpoint(tmp_path_factory, small_vit_b_checkpoint):
    """name of FAMILY_MODELS -> random reference-layout weights of that model, written on first use."""
    folder = tmp_path_factory.mktemp("families")
    written = {"sam": small_vit_b_checkpoint}

    def checkpoint(name: str) -> Path:
        if name not in written:
            seed = list(FAMILY_MODELS).index(name)
            written[name] = reference.write_reference_checkpoint(FAMILY_MODELS[name], folder / f"{name}.pth", seed)
        return written[name]

    return checkpoint


@pytest.fixture(scope="session")
def micro_checkpoint(tmp_path_factory) -> Path:
    return reference.write_reference_checkpoint(MICRO, tmp_path_factory.mktemp("ckpt") / "micro.pth", seed=3)


# The annotation app (tests/server): databases (SQLite and a real local PostgreSQL), headless
# Chromium. PostgreSQL and Chromium come from Debian's packages (`.ci/run` installs them);
# without them those tests skip with the reason, except where SEGANY_REQUIRE_SERVICES=1 (CI):
# there they fail.


def missing(reason: str) -> None:
    if os.environ.get("SEGANY_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def ort_web() -> Path:
    try:
        return find_ort_web()
    except Exception as err:
        missing(str(err))


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL cluster on a free local port, from Debian's postgresql package."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        missing("PostgreSQL server not installed (Debian package postgresql)")
    bin_dir = Path(found[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="segany-postgres-"))  # in /tmp: reachable by the postgres user
    data = folder / "data"
    as_user = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            missing("running as root and there is no postgres user to run PostgreSQL as")
        shutil.chown(folder, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run(as_user + [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "start",
                              "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"],
                   check=True, capture_output=True)
    try:
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "segany"],
                       check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/segany"
    finally:
        subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """Each database the app supports: a fresh SQLite file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'annotations.db'}"
    base = request.getfixturevalue("postgres_url")
    name = f"t{time.time_ns()}"
    import psycopg

    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return base.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, shared_data) -> Path:
    """Two example photographs, one in a subfolder, and a file beside the folder that must stay out of reach."""
    root = tmp_path_factory.mktemp("project")
    images = root / "images"
    (images / "more").mkdir(parents=True)
    shutil.copy(shared_data / "examples" / "dog.jpg", images / "dog.jpg")
    shutil.copy(shared_data / "examples" / "groceries.jpg", images / "more" / "groceries.jpg")
    (root / "secret.txt").write_text("not for clients")
    return images


@pytest.fixture(scope="module")
def server(image_folder, tmp_path_factory, ort_web):
    """The annotation app over `image_folder` with the bundled model, one per test module."""
    folder = tmp_path_factory.mktemp("app")
    running = start_server(image_folder, f"sqlite:///{folder / 'annotations.db'}", folder / "cache")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def chromium():
    if not os.path.exists(CHROMIUM):
        missing(f"{CHROMIUM} not installed (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the browser tests leave screenshots for people to look at ($SEGANY_SCREENSHOTS)."""
    folder = Path(os.environ.get("SEGANY_SCREENSHOTS", "test-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
