"""Architectures: the official sizes key for key, detection from shapes, smaller variants."""

import pytest
import torch

from segany.testing import official as reference
import segany
from conftest import MICRO, SMALL_VIT_B
from segany.errors import SegAnyError
from segany.modeling import CONFIGS, SamConfig, build_sam, config_name


def meta_state_dict(build):
    with torch.device("meta"):
        return build().state_dict()


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_official_architectures_have_the_official_keys_and_shapes(name):
    sa = reference.import_official()
    official = meta_state_dict(sa.sam_model_registry[name])
    ours = meta_state_dict(lambda: build_sam(CONFIGS[name]))
    assert list(ours) == list(official)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in official.items()}


@pytest.mark.parametrize("name", sorted(name for name, config in CONFIGS.items() if config.encoder == "vit"))
def test_config_is_detected_from_tensor_shapes(name):
    state_dict = meta_state_dict(lambda: build_sam(CONFIGS[name]))
    assert segany.detect_config(state_dict) == CONFIGS[name]
    assert config_name(segany.detect_config(state_dict)) == name


@pytest.mark.parametrize("config", [SMALL_VIT_B, MICRO], ids=["small_vit_b", "micro"])
def test_custom_configs_round_trip_through_detection_and_dict(config):
    state_dict = meta_state_dict(lambda: build_sam(config))
    assert segany.detect_config(state_dict) == config
    assert SamConfig.from_dict(config.to_dict()) == config


def test_unknown_config_field_is_named():
    with pytest.raises(ValueError, match="encoder_width"):
        SamConfig.from_dict({"encoder_width": 3})
    for make in (lambda: SamConfig(encoder="resnet"), lambda: SamConfig.from_dict({"encoder": "resnet"})):
        with pytest.raises(ValueError, match="unknown encoder 'resnet'; known: vit, tiny_vit, hiera, mobilenet_v2"):
            make()


def test_micro_model_output_shapes():
    model = build_sam(MICRO)
    grid = MICRO.image_size // MICRO.patch_size
    with torch.no_grad():
        embedding = model.image_encoder(torch.zeros(2, 3, MICRO.image_size, MICRO.image_size))
        assert embedding.shape == (2, MICRO.prompt_embed_dim, grid, grid)
        points = (torch.tensor([[[10.0, 20.0], [30.0, 40.0]]] * 3), torch.tensor([[1, 0]] * 3))
        sparse, dense = model.prompt_encoder(points, None, None)
        assert sparse.shape == (3, 3, MICRO.prompt_embed_dim)  # 2 points + padding
        assert dense.shape == (3, MICRO.prompt_embed_dim, grid, grid)
        masks, iou = model.mask_decoder(embedding[:1], model.prompt_encoder.get_dense_pe(), sparse, dense, True)
        assert masks.shape == (3, 3, 4 * grid, 4 * grid) and iou.shape == (3, 3)
        masks, iou = model.mask_decoder(embedding[:1], model.prompt_encoder.get_dense_pe(), sparse, dense, False)
        assert masks.shape == (3, 1, 4 * grid, 4 * grid) and iou.shape == (3, 1)


def test_decoder_accepts_one_embedding_per_prompt():
    """An embedding per prompt (as in training on several images) equals broadcasting one."""
    model = build_sam(MICRO)
    with torch.no_grad():
        embedding = torch.randn(1, MICRO.prompt_embed_dim, 16, 16)
        sparse, dense = model.prompt_encoder(None, torch.tensor([[0.0, 0.0, 100.0, 120.0]] * 2), None)
        pe = model.prompt_encoder.get_dense_pe()
        shared = model.mask_decoder(embedding, pe, sparse, dense, True)
        repeated = model.mask_decoder(embedding.expand(2, -1, -1, -1), pe, sparse, dense, True)
    for a, b in zip(shared, repeated):
        torch.testing.assert_close(a, b)


def test_window_partition_round_trips_with_padding():
    from segany.modeling.image_encoder import window_partition, window_unpartition

    x = torch.randn(2, 17, 23, 5)
    windows, padded = window_partition(x, 7)
    assert windows.shape == (2 * 3 * 4, 7, 7, 5) and padded == (21, 28)
    torch.testing.assert_close(window_unpartition(windows, 7, padded, (17, 23)), x, rtol=0, atol=0)


@pytest.mark.parametrize("fields, message", [
    (dict(decoder="hq2"), "unknown decoder 'hq2'; known: sam, hq"),
    (dict(encoder="tiny_vit", encoder_stage_dims=(64, 128, 160)), "a tiny_vit encoder needs 4 encoder_stage_dims"),
    (dict(encoder="tiny_vit", encoder_stage_dims=(64, 128, 160, 320), encoder_stage_depths=(2, 2, 6, 2),
          encoder_stage_heads=(4, 6, 10), encoder_stage_windows=(7, 14, 7)),
     r"encoder_stage_dims\[2\] 160 is not a multiple of encoder_stage_heads\[1\] 6"),
    (dict(encoder="mobilenet_v2", decoder="hq"), "the hq decoder needs a vit or tiny_vit encoder"),
    (dict(decoder="high_res"), "the high_res decoder needs a mobilenet_v2 encoder at patch_size 16, not vit"),
    (dict(decoder="hq", encoder_global_attn_indexes=()), "reads the first global-attention block"),
])
def test_family_fields_are_checked(fields, message):
    with pytest.raises(SegAnyError, match=message):
        SamConfig(**fields)


def test_family_names():
    assert [CONFIGS[name].family for name in ("vit_b", "vit_t", "hq_vit_h", "hq_vit_t", "mobilenet_v2")] == [
        "SAM", "MobileSAM", "SAM-HQ", "SAM-HQ", "segany"]
