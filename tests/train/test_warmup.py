import torch

import segany
from conftest import MICRO
from segany.train.warmup import init_for_localisation, localisation_warmup


def test_warmup_trains_prompt_encoder_and_decoder_only():
    """The warm-up needs no image; its effect at full length (the plateau crossed) is measured in
    docs/models.md, too long for a unit test."""
    model = segany.random_model(MICRO, seed=0).train()
    init_for_localisation(model, 0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    iou = localisation_warmup(model, steps=6, seed=0, progress=False)
    assert 0 <= iou <= 1
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith("image_encoder."))
    assert not torch.equal(after["mask_decoder.iou_token.weight"], before["mask_decoder.iou_token.weight"])
    assert not torch.equal(after["prompt_encoder.point_embeddings.1.weight"],
                           before["prompt_encoder.point_embeddings.1.weight"])
