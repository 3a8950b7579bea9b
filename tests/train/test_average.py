"""Weight averaging (model soups): the mean of every tensor, one architecture only."""

import pytest
import torch

import segany
from conftest import MICRO
from segany.cli import main
from segany.errors import SegAnyError
from segany.train.average import average_checkpoints


@pytest.fixture(scope="module")
def three_models(tmp_path_factory):
    """Three MICRO models of different seeds, in both of our file formats."""
    folder = tmp_path_factory.mktemp("soup")
    paths = [folder / "a.safetensors", folder / "b.pth", folder / "c.safetensors"]
    for seed, path in enumerate(paths):
        segany.save_model(segany.random_model(MICRO, seed=seed), path)
    return paths


@pytest.fixture(scope="module")
def other_architecture(tmp_path_factory):
    path = tmp_path_factory.mktemp("other") / "other.safetensors"
    segany.save_model(segany.random_model("vit_tiny"), path)
    return path


def test_every_tensor_is_the_mean(three_models):
    states = [segany.load_model(p).state_dict() for p in three_models]
    averaged = average_checkpoints(three_models)
    assert averaged.config == MICRO
    for key, tensor in averaged.state_dict().items():
        expected = sum(s[key].double() for s in states) / 3
        torch.testing.assert_close(tensor, expected.float(), rtol=0, atol=1e-7)
    weight = "mask_decoder.iou_prediction_head.layers.0.weight"
    assert not any(torch.equal(averaged.state_dict()[weight], s[weight]) for s in states)


def test_a_model_averaged_with_itself_is_unchanged(three_models):
    alone = segany.load_model(three_models[0]).state_dict()
    for key, tensor in average_checkpoints([three_models[0]] * 2).state_dict().items():
        assert torch.equal(tensor, alone[key]), key


def test_integer_tensors_are_the_first_checkpoints(tmp_path):
    """TinyViT's batch norms carry step counters; fine-tuned runs may disagree on them."""
    paths = []
    for seed in (0, 1):
        model = segany.random_model("vit_t", seed=seed)
        model.image_encoder.patch_embed.seq[0].bn.num_batches_tracked.fill_(10 * (seed + 1))
        paths.append(tmp_path / f"{seed}.safetensors")
        segany.save_model(model, paths[-1])
    counter = average_checkpoints(paths).image_encoder.patch_embed.seq[0].bn.num_batches_tracked
    assert counter.dtype == torch.int64 and counter.item() == 10


def test_refuses_one_checkpoint_and_mixed_architectures(three_models, other_architecture):
    with pytest.raises(SegAnyError, match="at least two"):
        average_checkpoints(three_models[:1])
    with pytest.raises(SegAnyError, match=f"{other_architecture}: architecture vit_tiny differs"):
        average_checkpoints([three_models[0], other_architecture])


def test_cli_writes_the_average_or_nothing(tmp_path, capsys, three_models, other_architecture):
    out = tmp_path / "soup.safetensors"
    assert main(["average", *map(str, three_models), "-o", str(out)]) == 0
    assert "average of 3" in capsys.readouterr().out
    written = segany.load_model(out).state_dict()
    for key, tensor in average_checkpoints(three_models).state_dict().items():
        assert torch.equal(written[key], tensor), key

    failed = tmp_path / "failed.safetensors"
    assert main(["average", str(three_models[0]), str(other_architecture), "-o", str(failed)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "differs" in err
    assert not failed.exists()
