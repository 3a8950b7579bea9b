import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segany.testing import official as reference
from segany.modeling import SamConfig

REPO = Path(__file__).resolve().parents[1]

# Reduced-depth vit_b: official widths, one windowed and one global block.
SMALL_VIT_B = SamConfig(encoder_depth=2, encoder_global_attn_indexes=(1,))
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


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="session")
def small_vit_b_checkpoint(tmp_path_factory) -> Path:
    """Random official-layout weights of the reduced-depth vit_b, saved as Meta saves theirs."""
    return reference.write_official_checkpoint(SMALL_VIT_B, tmp_path_factory.mktemp("ckpt") / "small_vit_b.pth")


@pytest.fixture(scope="session")
def micro_checkpoint(tmp_path_factory) -> Path:
    return reference.write_official_checkpoint(MICRO, tmp_path_factory.mktemp("ckpt") / "micro.pth", seed=3)
