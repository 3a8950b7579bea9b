"""Training relies on segany's fast modules giving the official model's gradients, not only its outputs."""

import pytest
import torch

from segany.checkpoint import random_model
from segany.testing import official as reference
from conftest import MICRO


def _gradients(model, image, points, labels, mask_prompt, targets, multimask):
    model.zero_grad()
    embedding = model.image_encoder(image)
    sparse, dense = model.prompt_encoder(points=(points, labels), boxes=None, masks=mask_prompt)
    logits, iou = model.mask_decoder(
        image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
    )
    loss = (logits - targets[:, : logits.shape[1]]).square().mean() + (iou - 0.5).square().sum()
    loss.backward()
    # A parameter the graph never reaches has no gradient here and a zero one in the official code.
    return {n: torch.zeros_like(p) if p.grad is None else p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("multimask", [True, False])
def test_gradients_match_official(multimask):
    ours = random_model(MICRO, seed=0).train()
    official = reference.build_reference(MICRO).train()
    official.load_state_dict(ours.state_dict())
    generator = torch.Generator().manual_seed(0)
    size = MICRO.image_size
    image = torch.randn(1, 3, size, size, generator=generator)
    points = torch.rand(3, 2, 2, generator=generator) * size
    labels = torch.tensor([[1, 0], [1, 1], [1, -1]])
    mask_prompt = torch.randn(3, 1, size // 4, size // 4, generator=generator)
    targets = (torch.rand(3, 3, size // 4, size // 4, generator=generator) > 0.7).float()
    grads = _gradients(ours, image, points, labels, mask_prompt, targets, multimask)
    ref_grads = _gradients(official, image, points, labels, mask_prompt, targets, multimask)
    assert grads.keys() == ref_grads.keys()
    for name, ref in ref_grads.items():
        if name.endswith("k_proj.bias"):
            continue  # softmax ignores a shift shared by all keys: both are rounding noise around zero
        scale = ref.abs().max().item() + 1e-8
        assert (grads[name] - ref).abs().max().item() <= 1e-4 * scale, name
