import numpy as np
import torch

import segany
from conftest import MICRO
from segany.data import shared_dataset
from segany.train.interactive import ROUNDS, prepare_example, simulate_interaction


def test_examples_put_masks_on_the_low_res_grid_of_the_padded_image(shared_data):
    model = segany.random_model(MICRO)
    sample = shared_dataset("pennfudan", "train", shared_data)[0]
    example = prepare_example(model, sample.image, sample.masks)
    assert example.image.shape == (3, 256, 256)
    assert example.targets.shape == (len(sample.masks), 64, 64)
    h, w = sample.image.shape[:2]
    scale = 64 / max(h, w)
    for target, mask in zip(example.targets, sample.masks):  # same area, in grid cells
        assert abs(target.sum().item() - mask.sum() * scale**2) < 0.15 * mask.sum() * scale**2 + 4
    assert example.targets[:, round(h * scale) + 1 :].sum() == 0  # nothing in the padding


def test_a_tiny_model_learns_a_few_images(shared_data):
    """Training on 3 PennFudan images: the loss falls and the masks get better."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = segany.random_model(MICRO, seed=1)
    dataset = shared_dataset("pennfudan", "train", shared_data)
    examples = [prepare_example(model, s.image, s.masks[:3]) for s in (dataset[0], dataset[1], dataset[2])]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    history = []
    for step in range(90):
        example = examples[step % len(examples)]
        embedding = model.image_encoder(example.image[None])
        loss, metrics = simulate_interaction(model, embedding, example.targets, rng)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), metrics["last_round_miou"]))
    losses, ious = np.array(history).T
    assert losses[-15:].mean() < 0.6 * losses[:15].mean()
    assert ious[-15:].mean() > ious[:15].mean() + 0.3


def test_rounds_add_points_from_the_errors(shared_data, monkeypatch):
    """Across the 11 rounds the prompts grow by one point in 8 of them, for every mask."""
    model = segany.random_model(MICRO)
    sample = shared_dataset("pennfudan", "train", shared_data)[0]
    example = prepare_example(model, sample.image, sample.masks)
    seen = []
    encoder = model.prompt_encoder.forward

    def record(points=None, boxes=None, masks=None):
        seen.append((None if points is None else (points[1] != -1).sum(dim=1).tolist(), masks is not None))
        return encoder(points=points, boxes=boxes, masks=masks)

    monkeypatch.setattr(model.prompt_encoder, "forward", record)
    with torch.no_grad():
        simulate_interaction(model, model.image_encoder(example.image[None]), example.targets,
                             np.random.default_rng(3))
    assert len(seen) == ROUNDS
    assert [has_mask for _, has_mask in seen] == [False] + [True] * (ROUNDS - 1)
    counts = [c if c is not None else [0] * len(sample.masks) for c, _ in seen]
    first = counts[0][0]
    assert counts[-1] == [first + 8] * len(sample.masks)  # random weights: errors everywhere


def test_one_point_gets_three_masks_a_box_or_more_points_the_single_mask(shared_data, monkeypatch):
    model = segany.random_model(MICRO)
    sample = shared_dataset("pennfudan", "train", shared_data)[0]
    example = prepare_example(model, sample.image, sample.masks)
    prompts, flags = [], []
    encoder, decoder = model.prompt_encoder.forward, model.mask_decoder.forward

    def record_prompts(points=None, boxes=None, masks=None):
        prompts.append((0 if points is None else int((points[1] != -1).sum(dim=1).max()), boxes is not None))
        return encoder(points=points, boxes=boxes, masks=masks)

    def record_decoder(*args, multimask_output, **options):
        flags.append(multimask_output)
        return decoder(*args, multimask_output=multimask_output, **options)

    monkeypatch.setattr(model.prompt_encoder, "forward", record_prompts)
    monkeypatch.setattr(model.mask_decoder, "forward", record_decoder)
    with torch.no_grad():
        for seed in range(6):
            simulate_interaction(model, model.image_encoder(example.image[None]), example.targets,
                                 np.random.default_rng(seed))
    firsts = {prompts[i] for i in range(0, len(prompts), ROUNDS)}
    assert firsts == {(1, False), (0, True)}  # both kinds of first prompt were drawn
    assert flags == [points == 1 and not box for points, box in prompts]


def test_large_scale_jitter_moves_image_and_masks_together():
    model = segany.random_model(MICRO)
    image = np.zeros((300, 400, 3), np.uint8)
    masks = np.zeros((2, 300, 400), bool)
    masks[0, 50:200, 100:250] = True
    masks[1, 220:290, 10:390] = True
    image[masks[0]] = (255, 0, 0)
    image[masks[1]] = (0, 255, 0)
    rng = np.random.default_rng(0)
    for _ in range(12):
        example = prepare_example(model, image, masks, jitter=(0.3, 2.0), rng=rng)
        assert example.image.shape == (3, 256, 256) and example.targets.shape == (2, 64, 64)
        pixels = example.image * model.pixel_std + model.pixel_mean  # back to 0-255 (padding: the mean)
        grid = torch.nn.functional.avg_pool2d(pixels[None], 4)[0]
        for channel, target in zip((0, 1), example.targets):
            # mostly this colour, and no padding (the padding reads as the mean colour, blue 104)
            coloured = (grid[channel] > 128) & (grid[1 - channel] < 32) & (grid[2] < 32)
            if target.sum() > 20:
                overlap = (coloured & (target > 0)).sum() / (coloured | (target > 0)).sum()
                assert overlap > 0.8
