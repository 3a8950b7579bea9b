"""Loading, converting and saving weights, and the errors bad files get."""

import io
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from segany.testing import official as reference
import segany
from conftest import FAMILY_MODELS, MICRO
from segany.checkpoint import read_checkpoint
from segany.errors import CheckpointError


def assert_same_tensors(a, b):
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def test_official_layout_pth_loads_with_detected_config(micro_checkpoint):
    model = segany.load_model(micro_checkpoint)
    assert model.config == MICRO
    assert not model.training
    assert_same_tensors(model.state_dict(), torch.load(micro_checkpoint))


def test_pth_to_safetensors_and_back_is_bit_identical(micro_checkpoint, tmp_path):
    original = torch.load(micro_checkpoint)
    st = tmp_path / "model.safetensors"
    back = tmp_path / "back.pth"
    assert segany.convert_checkpoint(micro_checkpoint, st) == MICRO
    assert segany.convert_checkpoint(st, back) == MICRO
    converted, _ = read_checkpoint(st)
    assert set(converted) == set(original)
    for key, tensor in original.items():
        assert converted[key].dtype == tensor.dtype and torch.equal(converted[key], tensor), key
    assert_same_tensors(torch.load(back), original)  # same keys, same order, same bits
    with safe_open(st, framework="pt") as f:
        assert segany.SamConfig.from_dict(json.loads(f.metadata()["config"])) == MICRO
        assert f.metadata()["format"] == "segany"


def test_safetensors_config_is_used_without_detection(tmp_path):
    """Decoder heads cannot be seen in shapes; our files keep them in the metadata."""
    config = segany.SamConfig(**{**MICRO.to_dict(), "decoder_num_heads": 4})
    path = tmp_path / "four_heads.safetensors"
    segany.save_model(segany.random_model(config), path)
    assert segany.load_model(path).config == config


def test_wrapped_and_ddp_prefixed_state_dicts_load(micro_checkpoint, tmp_path):
    state_dict = torch.load(micro_checkpoint)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state_dict.items()}, "epoch": 3}, wrapped)
    assert_same_tensors(segany.load_model(wrapped).state_dict(), state_dict)


def test_half_precision_weights_load_as_float32(micro_checkpoint, tmp_path):
    state_dict = torch.load(micro_checkpoint)
    half = tmp_path / "half.pth"
    torch.save({k: v.half() for k, v in state_dict.items()}, half)
    model = segany.load_model(half)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_registry_builders_load_checkpoints(micro_checkpoint, tmp_path):
    sa = reference.import_official()
    assert set(segany.sam_model_registry) == set(sa.sam_model_registry) | {"vit_t"}
    assert set(segany.sam_model_registry) == set(reference.import_reference("mobile_sam").sam_model_registry)
    tiny = tmp_path / "tiny.pth"
    segany.save_model(segany.random_model("vit_tiny"), tiny)
    with pytest.raises(CheckpointError, match=r"shape mismatch for image_encoder\.blocks\.0\.attn\.proj\.bias"):
        segany.sam_model_registry["vit_b"](checkpoint=tiny)


def test_registered_official_names_are_found_in_the_weights_dir(micro_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGANY_WEIGHTS", str(tmp_path))
    with pytest.raises(CheckpointError, match=r"sam_vit_b_01ec64\.pth is not in .*download it from https://"):
        segany.load_model("sam_vit_b")
    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(Path(micro_checkpoint).read_bytes())
    assert segany.load_model("sam_vit_b").config == MICRO


def write_bytes(tmp_path, name, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


class Opaque:
    pass


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d, ckpt: d / "nope.pth", r"checkpoint not found: .*nope\.pth"),
        (lambda d, ckpt: d, r"is a directory"),
        (lambda d, ckpt: write_bytes(d, "empty.pth", b""), r"empty file"),
        (lambda d, ckpt: write_bytes(d, "notes.pth", b"these are not weights\n" * 10), r"not a .*checkpoint"),
        (lambda d, ckpt: write_bytes(d, "truncated.pth", ckpt.read_bytes()[: len(ckpt.read_bytes()) // 2]),
         r"truncated or corrupt checkpoint"),
        (lambda d, ckpt: write_bytes(d, "object.pth", pickle.dumps(Opaque())), r"not a readable checkpoint"),
        (lambda d, ckpt: write_bytes(d, "list.pth", _torch_bytes([1, 2, 3])), r"expected a state dict, found list"),
        (lambda d, ckpt: write_bytes(d, "mixed.pth", _torch_bytes({"a": torch.zeros(1), "b": 3})),
         r"non-tensor entries b"),
        (lambda d, ckpt: write_bytes(d, "other.pth", _torch_bytes({"backbone.conv1.weight": torch.zeros(1)})),
         r"not a SAM checkpoint: missing key image_encoder\.patch_embed\.proj\.weight \(found backbone\.conv1"),
    ],
    ids=["missing", "directory", "empty", "text", "truncated", "pickled-object", "list", "non-tensor", "other-model"],
)
def test_bad_files_get_clear_errors(tmp_path, micro_checkpoint, make, message):
    path = make(tmp_path, Path(micro_checkpoint))
    with pytest.raises(CheckpointError, match=message) as info:
        segany.load_model(path)
    assert "\n" not in str(info.value)


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_truncated_safetensors_is_reported(tmp_path):
    path = tmp_path / "m.safetensors"
    segany.save_model(segany.random_model(MICRO), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"truncated or corrupt safetensors file"):
        segany.load_model(path)


def test_missing_and_unexpected_keys_are_listed(micro_checkpoint, tmp_path):
    state_dict = torch.load(micro_checkpoint)
    del state_dict["mask_decoder.iou_token.weight"]
    state_dict["mask_decoder.extra.weight"] = torch.zeros(2)
    path = tmp_path / "edited.pth"
    torch.save(state_dict, path)
    with pytest.raises(CheckpointError) as info:
        segany.load_model(path)
    message = str(info.value)
    assert "missing keys: mask_decoder.iou_token.weight" in message
    assert "unexpected keys: mask_decoder.extra.weight" in message


def test_safetensors_without_config_falls_back_to_detection(micro_checkpoint, tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file(dict(torch.load(micro_checkpoint)), path)
    assert segany.load_model(path).config == MICRO


def test_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(CheckpointError, match="unknown checkpoint suffix"):
        segany.save_model(segany.random_model(MICRO), tmp_path / "model.bin")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("model", ["mobile_sam", "sam_hq", "sam_hq_tiny"])
def test_other_families_detect_and_convert_bit_identically(family_checkpoint, tmp_path, model):
    """A MobileSAM or SAM-HQ .pth in its reference's layout: family and sizes detected, .safetensors
    with the config and back with the same bits, and the registry builder of its encoder loads it."""
    config, pth = FAMILY_MODELS[model], family_checkpoint(model)
    original = torch.load(pth)
    st, back = tmp_path / "model.safetensors", tmp_path / "back.pth"
    assert segany.convert_checkpoint(pth, st) == config
    assert segany.convert_checkpoint(st, back) == config
    assert_same_tensors(torch.load(back), original)
    assert_same_tensors(segany.load_model(st).state_dict(), original)
    if config.encoder == "tiny_vit":
        built = segany.sam_model_registry["vit_t"](checkpoint=pth)
        assert built.config == config
        assert_same_tensors(built.state_dict(), original)


@pytest.mark.parametrize("name", ["vit_t", "hq_vit_b", "hq_vit_l", "hq_vit_h", "hq_vit_t"])
def test_released_family_sizes_are_detected_from_shapes(name):
    """Every registered MobileSAM and SAM-HQ size, built on the meta device (no memory), is told
    apart from its keys and shapes alone."""
    config = segany.CONFIGS[name]
    with torch.device("meta"):
        state_dict = segany.modeling.build_sam(config).state_dict()
    assert segany.checkpoint.detect_config(state_dict) == config


def test_sam2_checkpoint_converts_bit_identically_with_its_video_modules(family_checkpoint, tmp_path):
    """A SAM 2.1 .pt (state dict under "model", video memory modules included): hiera_t detected,
    .safetensors and back with the same names and bits; the model holds the image part."""
    pth = family_checkpoint("sam2")
    original = torch.load(pth, weights_only=True)["model"]
    video = {k: v for k, v in original.items() if segany.checkpoint.is_video_memory(k)}
    assert video
    st, back = tmp_path / "model.safetensors", tmp_path / "back.pt"
    assert segany.convert_checkpoint(pth, st) == segany.CONFIGS["hiera_t"]
    assert segany.convert_checkpoint(st, back) == segany.CONFIGS["hiera_t"]
    returned = torch.load(back, weights_only=True)["model"]
    assert_same_tensors(dict(sorted(returned.items())), dict(sorted(original.items())))
    image_part = segany.checkpoint.to_sam2_layout(segany.load_model(st).state_dict())
    assert_same_tensors(image_part, {k: original[k] for k in image_part})
    assert set(image_part) | set(video) == set(original)


def test_sam2_video_modules_alone_are_refused(family_checkpoint, tmp_path):
    original = torch.load(family_checkpoint("sam2"), weights_only=True)["model"]
    path = tmp_path / "memory_only.pt"
    torch.save({"model": {k: v for k, v in original.items() if segany.checkpoint.is_video_memory(k)}}, path)
    with pytest.raises(CheckpointError, match="only SAM 2's video memory modules"):
        segany.load_model(path)


@pytest.mark.parametrize("name", ["hiera_t", "hiera_s", "hiera_b+", "hiera_l"])
def test_released_sam2_sizes_are_detected_from_shapes(name):
    config = segany.CONFIGS[name]
    with torch.device("meta"):
        state_dict = segany.modeling.build_sam(config).state_dict()
    assert segany.checkpoint.detect_config(state_dict) == config
