"""Each module against its official counterpart on the same random weights and inputs."""

import dataclasses

import pytest
import torch

from segany.testing import official as reference
from conftest import MICRO
from segany.modeling import CONFIGS, SamConfig, build_sam


@pytest.fixture(scope="module")
def models():
    reference.import_official()
    official = reference.build_reference(MICRO)
    state_dict = reference.random_reference_state_dict(MICRO, seed=11)
    official.load_state_dict(state_dict)
    ours = build_sam(MICRO)
    ours.load_state_dict(state_dict)
    return ours, official


def test_image_encoder(models):
    ours, official = models
    x = torch.randn(2, 3, MICRO.image_size, MICRO.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours.image_encoder(x), official.image_encoder(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("prompt", ["points", "boxes", "points_and_boxes", "masks", "nothing"])
def test_prompt_encoder(models, prompt):
    ours, official = models
    g = torch.Generator().manual_seed(1)
    size = MICRO.image_size
    points = (torch.rand(4, 3, 2, generator=g) * size, torch.tensor([[1, 0, -1], [0, 0, 1], [1, 1, 1], [-1, 1, 0]]))
    boxes = torch.sort(torch.rand(4, 2, 2, generator=g) * size, dim=1).values.reshape(4, 4)
    masks = torch.randn(4, 1, 4 * size // 16, 4 * size // 16, generator=g)
    kwargs = {
        "points": dict(points=points, boxes=None, masks=None),
        "boxes": dict(points=None, boxes=boxes, masks=None),
        "points_and_boxes": dict(points=points, boxes=boxes, masks=None),
        "masks": dict(points=points, boxes=None, masks=masks),
        "nothing": dict(points=None, boxes=None, masks=None),
    }[prompt]
    with torch.no_grad():
        for a, b in zip(ours.prompt_encoder(**kwargs), official.prompt_encoder(**kwargs)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        torch.testing.assert_close(ours.prompt_encoder.get_dense_pe(), official.prompt_encoder.get_dense_pe())


@pytest.mark.parametrize("multimask", [True, False])
def test_mask_decoder(models, multimask):
    ours, official = models
    g = torch.Generator().manual_seed(2)
    embedding = torch.randn(1, MICRO.prompt_embed_dim, 16, 16, generator=g)
    sparse = torch.randn(5, 4, MICRO.prompt_embed_dim, generator=g)
    dense = torch.randn(5, MICRO.prompt_embed_dim, 16, 16, generator=g)
    pe = official.prompt_encoder.get_dense_pe()
    with torch.no_grad():
        for a, b in zip(ours.mask_decoder(embedding, pe, sparse, dense, multimask),
                        official.mask_decoder(embedding, pe, sparse, dense, multimask)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_mask_decoder_skips_only_masks_below_the_iou_threshold(models):
    ours, _ = models
    g = torch.Generator().manual_seed(3)
    embedding = torch.randn(1, MICRO.prompt_embed_dim, 16, 16, generator=g)
    sparse = torch.randn(12, 2, MICRO.prompt_embed_dim, generator=g)
    dense = torch.randn(1, MICRO.prompt_embed_dim, 1, 1, generator=g).expand(12, -1, 16, 16)
    pe = ours.prompt_encoder.get_dense_pe()
    with torch.no_grad():
        masks, iou = ours.mask_decoder(embedding, pe, sparse, dense, True)
        threshold = iou.max(dim=1).values.median().item()
        skipped_masks, skipped_iou = ours.mask_decoder(embedding, pe, sparse, dense, True, iou_threshold=threshold)
    torch.testing.assert_close(skipped_iou, iou, rtol=0, atol=0)
    wanted = (iou > threshold).any(dim=1)
    assert 0 < wanted.sum() < len(wanted)
    torch.testing.assert_close(skipped_masks[wanted], masks[wanted], rtol=0, atol=1e-6)
    assert skipped_masks[~wanted].isnan().all()


def test_image_encoder_differentiable_path(models):
    """With gradients on, attention builds whole maps (autograd); same values as inference."""
    ours, official = models
    x = torch.randn(1, 3, MICRO.image_size, MICRO.image_size, generator=torch.Generator().manual_seed(4))
    x.requires_grad_(True)
    got = ours.image_encoder(x)
    got.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with torch.no_grad():
        torch.testing.assert_close(got.detach(), official.image_encoder(x), rtol=0, atol=1e-5)


def test_mask_decoder_shares_the_image_side_across_prompts(models):
    """A broadcast dense embedding (no mask prompt) takes the batch-1 image path; same results."""
    ours, official = models
    g = torch.Generator().manual_seed(3)
    embedding = torch.randn(1, MICRO.prompt_embed_dim, 16, 16, generator=g)
    sparse = torch.randn(6, 3, MICRO.prompt_embed_dim, generator=g)
    dense = ours.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(6, -1, 16, 16)
    pe = official.prompt_encoder.get_dense_pe()
    with torch.no_grad():
        for a, b in zip(ours.mask_decoder(embedding, pe, sparse, dense, True),
                        official.mask_decoder(embedding, pe, sparse, dense, True)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("input_size, original_size", [((683, 1024), (1200, 1800)), ((1024, 681), (481, 320)),
                                                       ((1024, 1024), (500, 500)), ((1, 1024), (3, 3000))])
def test_mask_upscaling_is_bit_identical(input_size, original_size):
    reference.import_official()
    from segment_anything.modeling import Sam as OfficialSam

    ours = build_sam(SamConfig(encoder_depth=1, encoder_global_attn_indexes=(0,)))  # image size 1024
    low_res = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    want = OfficialSam.postprocess_masks(ours, low_res, input_size, original_size)
    got = ours.postprocess_masks(low_res, input_size, original_size)
    assert torch.equal(got, want)


def test_gradient_checkpointing_gives_the_same_values_and_gradients(models):
    ours, _ = models
    x = torch.randn(1, 3, MICRO.image_size, MICRO.image_size, generator=torch.Generator().manual_seed(5))
    results = []
    for checkpointing in (False, True):
        ours.image_encoder.gradient_checkpointing = checkpointing
        ours.zero_grad()
        out = ours.image_encoder(x)
        out.square().mean().backward()
        results.append((out.detach(), ours.image_encoder.patch_embed.proj.weight.grad.clone()))
    ours.image_encoder.gradient_checkpointing = False
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("config", ["mobilenet_v2_hr", "hq_vit_b"])
def test_per_prompt_features_decode_as_copies_of_the_image_features(config):
    """Prompts of two images decoded as one batch from `per_prompt_features` (SAM 2-style features
    laid out once per image) get the same masks as from per-prompt copies of `image_features`."""
    torch.manual_seed(0)
    config = dataclasses.replace(CONFIGS[config], image_size=128, encoder_depth=2, encoder_global_attn_indexes=(1,))
    model = build_sam(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # the high-res projections start at zero
            parameter.add_(torch.randn_like(parameter) * 0.05)
        embeddings, features = model.encode_image(torch.randn(2, 3, 128, 128))
        image_index = torch.tensor([1, 1, 0])
        points = (torch.rand(3, 1, 2) * 128, torch.ones(3, 1, dtype=torch.int))
        sparse, dense = model.prompt_encoder(points=points, boxes=None, masks=None)
        decoded = [model.mask_decoder(embeddings.index_select(0, image_index), model.prompt_encoder.get_dense_pe(),
                                      sparse, dense, multimask_output=True, high_res_features=prompt_features)
                   for prompt_features in (tuple(f.index_select(0, image_index) for f in features),
                                           model.mask_decoder.per_prompt_features(features, embeddings.shape[-2:],
                                                                                  image_index))]
    (want_masks, want_iou), (masks, iou) = decoded
    assert masks.abs().amax() > 0.1 and masks.shape[0] == 3 and masks.shape[-2:] == (32, 32)
    torch.testing.assert_close(masks, want_masks, rtol=0, atol=1e-5)
    torch.testing.assert_close(iou, want_iou, rtol=0, atol=1e-6)
