import csv
import dataclasses
import re

import numpy as np
import pytest
import torch

import segany
from conftest import MICRO, REPO, SMALL_HQ_VIT_B
from segany.cli import main
from segany.errors import SegAnyError
from segany.modeling import CONFIGS
from segany.modeling.mask_decoder_hq import MaskDecoderHQ
from segany.modeling.transformer import Attention
from segany.testing import official as reference
from segany.data.synthetic import SyntheticScenes
from segany.train.trainer import StepData, TrainConfig, build_model, learning_rate, train


@pytest.fixture(scope="module")
def micro_init(tmp_path_factory):
    path = tmp_path_factory.mktemp("init") / "micro.safetensors"
    segany.save_model(segany.random_model(MICRO, seed=4), path)
    return str(path)


def config_for(tmp_path, micro_init, shared_data, **changes):
    values = dict(output=str(tmp_path), init=micro_init, data_root=str(shared_data), steps=6, masks_per_image=3,
                  warmup_steps=2, checkpoint_every=2, workers=0, validation_images=1, freeze=[],
                  datasets={"pennfudan": 1.0, "coco128-seg": 1.0})
    values.update(changes)
    return TrainConfig(**values)


@pytest.mark.parametrize("batch", [dict(), dict(images_per_step=2, rounds=3)], ids=["paper", "batched"])
def test_resumed_run_equals_the_uninterrupted_one(tmp_path, micro_init, shared_data, batch):
    whole = train(config_for(tmp_path / "whole", micro_init, shared_data, **batch), progress=False)
    first = config_for(tmp_path / "parts", micro_init, shared_data, workers=1, **batch)
    train(first, stop_after=3, progress=False)
    resumed = train(first, resume=True, progress=False)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    with (tmp_path / "parts" / "metrics.csv").open() as file:
        steps = [row["step"] for row in csv.DictReader(file)]
    assert steps == [str(i) for i in range(6)]  # every step once, header once
    assert segany.load_model(tmp_path / "parts" / "model.safetensors").config == MICRO
    with (tmp_path / "parts" / "validation.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [(r["step"], r["dataset"]) for r in rows] == [("6", "pennfudan"), ("6", "coco128-seg")]
    assert all(0 <= float(r["oracle_miou"]) <= 1 and int(r["objects"]) > 0 for r in rows)


def test_frozen_submodules_do_not_change(tmp_path, micro_init, shared_data):
    model = train(config_for(tmp_path, micro_init, shared_data, steps=2, freeze=["image_encoder.blocks"]),
                  progress=False)
    start = segany.load_model(micro_init)
    assert torch.equal(model.image_encoder.blocks[0].attn.qkv.weight, start.image_encoder.blocks[0].attn.qkv.weight)
    assert not torch.equal(model.image_encoder.neck[0].weight, start.image_encoder.neck[0].weight)


def test_frozen_parts_do_not_change(tmp_path, micro_init, shared_data):
    model = train(config_for(tmp_path, micro_init, shared_data, steps=2, freeze=["image_encoder"]), progress=False)
    start = segany.load_model(micro_init)
    for name, value in model.image_encoder.state_dict().items():
        assert torch.equal(value, start.image_encoder.state_dict()[name]), name
    assert not torch.equal(model.mask_decoder.iou_token.weight, start.mask_decoder.iou_token.weight)


def test_schedule_warms_up_then_decays():
    config = TrainConfig(steps=90, lr=1e-3, warmup_steps=10, decay_at=[2 / 3, 26 / 27])
    assert learning_rate(config, 0) == pytest.approx(1e-4) and learning_rate(config, 9) == pytest.approx(1e-3)
    assert learning_rate(config, 59) == pytest.approx(1e-3) and learning_rate(config, 60) == pytest.approx(1e-4)
    assert learning_rate(config, 89) == pytest.approx(1e-5)


def test_config_errors_are_one_line(tmp_path, micro_init, shared_data, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 3\nlearning_rate: 0.1\n")
    assert main(["train", str(bad)]) == 2
    assert "unknown field(s) learning_rate" in capsys.readouterr().err
    with pytest.raises(SegAnyError, match="freeze: unknown part 'decoder'"):
        train(config_for(tmp_path / "x", micro_init, shared_data, freeze=["decoder"]), progress=False)
    with pytest.raises(SegAnyError, match="no module 'image_encoder.trunk'"):  # a ViT has blocks, no trunk
        train(config_for(tmp_path / "z", micro_init, shared_data, freeze=["image_encoder.trunk"]), progress=False)
    with pytest.raises(SegAnyError, match="nothing to resume from"):
        train(config_for(tmp_path / "y", micro_init, shared_data), resume=True, progress=False)


def test_train_command_runs_from_a_yaml_file(tmp_path, micro_init, shared_data, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(f"init: {micro_init}\ndata_root: {shared_data}\nsteps: 2\nwarmup_steps: 1\n"
                      "masks_per_image: 2\nworkers: 0\ndatasets: {pennfudan: 1.0}\n")
    assert main(["train", str(config), "--output", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "model.safetensors").exists() and (tmp_path / "run" / "last.pt").exists()
    assert main(["train", str(config), "--output", str(tmp_path / "run")]) == 2
    assert "holds a run already" in capsys.readouterr().err


def test_bf16_checkpointed_jittered_training_runs(tmp_path, micro_init, shared_data):
    config = config_for(tmp_path, micro_init, shared_data, steps=2, bf16=True, checkpoint_encoder=True,
                        jitter=[0.3, 2.0], datasets={"synthetic": 1.0, "pennfudan": 1.0})
    model = train(config, progress=False)
    assert model.image_encoder.gradient_checkpointing
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_architecture_can_be_given_as_config_fields(tmp_path, shared_data):
    fields = {"image_size": 256, "encoder_embed_dim": 64, "encoder_depth": 2, "encoder_num_heads": 2,
              "encoder_global_attn_indexes": [1], "encoder_window_size": 6, "prompt_embed_dim": 64,
              "decoder_mlp_dim": 128, "iou_head_hidden_dim": 64}
    config = TrainConfig(output=str(tmp_path), model=fields, data_root=str(shared_data), steps=1, warmup_steps=1,
                         masks_per_image=2, workers=0, validation_images=1, datasets={"synthetic": 1.0},
                         localisation_steps=2)
    model = train(config, progress=False)
    assert model.config == MICRO


def test_steps_whose_masks_all_vanish_are_skipped(tmp_path, micro_init, shared_data):
    """Jittered to a few pixels, every mask falls between grid cells: nothing to learn, no crash."""
    config = config_for(tmp_path, micro_init, shared_data, steps=3, jitter=[0.01, 0.02], validation_images=1)
    model = train(config, progress=False)
    start = segany.load_model(micro_init)
    for name, value in model.state_dict().items():
        assert torch.equal(value, start.state_dict()[name]), name
    with (tmp_path / "metrics.csv").open() as file:
        assert [row["loss"] for row in csv.DictReader(file)] == ["nan"] * 3
    assert (tmp_path / "last.pt").exists()


def test_random_init_prepares_the_decoder_to_localise(tmp_path, shared_data):
    config = TrainConfig(output=str(tmp_path), model="vit_tiny", initial_embedding_scale=0.1)
    model = build_model(config)
    attentions = [m for m in model.mask_decoder.transformer.modules() if isinstance(m, Attention)]
    assert len(attentions) == 7  # 2 blocks x 3, and the final token-to-image attention
    assert all(torch.equal(a.q_proj.weight, a.k_proj.weight) for a in attentions)
    assert torch.all(model.image_encoder.neck[-1].weight == 0.1)
    assert not model.prompt_encoder.mask_downscaling[-1].weight.any()
    # A given checkpoint is left as it is.
    path = tmp_path / "given.safetensors"
    segany.save_model(segany.random_model(MICRO, seed=1), path)
    given = build_model(TrainConfig(output=str(tmp_path), init=str(path)))
    assert not torch.equal(given.mask_decoder.transformer.layers[0].self_attn.q_proj.weight,
                           given.mask_decoder.transformer.layers[0].self_attn.k_proj.weight)


def test_init_with_a_larger_model_grows_it(tmp_path, micro_init, shared_data):
    """SAM's checkpoint grown into SAM-HQ, as SAM-HQ trains: SAM's tensors kept, the HQ modules new
    and, by default, the only ones trained."""
    given = segany.load_model(micro_init).state_dict()
    grown = build_model(TrainConfig(output=str(tmp_path), model=dataclasses.asdict(dataclasses.replace(MICRO, decoder="hq")),
                                    init=micro_init))
    state = grown.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in given.items())
    assert {name.split(".")[1] for name in set(state) - set(given)} == set(MaskDecoderHQ.HQ_MODULES)
    assert {name.split(".")[1] for name, p in grown.named_parameters() if p.requires_grad} == set(MaskDecoderHQ.HQ_MODULES)
    with pytest.raises(SegAnyError, match=r"does not fit model: \d+ tensor\(s\)"):
        build_model(TrainConfig(output=str(tmp_path), model="vit_tiny", init=micro_init))


def test_a_batched_step_decodes_the_masks_of_all_its_images(tmp_path, micro_init, shared_data, monkeypatch):
    from segany.train import trainer

    seen = []
    simulate = trainer.simulate_interaction

    def record(model, embeddings, targets, rng, image_index, rounds, *rest):
        seen.append((embeddings.shape[0], image_index.tolist(), rounds))
        return simulate(model, embeddings, targets, rng, image_index, rounds, *rest)

    monkeypatch.setattr(trainer, "simulate_interaction", record)
    train(config_for(tmp_path, micro_init, shared_data, steps=2, images_per_step=3, rounds=2,
                     datasets={"pennfudan": 1.0}), progress=False)
    assert [(images, rounds) for images, _, rounds in seen] == [(3, 2), (3, 2)]
    for _, index, _ in seen:  # the masks of image 0, then 1, then 2
        assert sorted(index) == index and set(index) == {0, 1, 2}


class _RunsCode:
    def __reduce__(self):
        import os

        return os.system, ("touch pwned",)


def test_resume_state_is_read_without_running_code(tmp_path, micro_init, shared_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_for(tmp_path / "run", micro_init, shared_data, steps=2)
    train(config, stop_after=1, progress=False)
    state = tmp_path / "run" / "last.pt"
    torch.save({"model": {}, "optimizer": _RunsCode(), "step": 1}, state)
    with pytest.raises(SegAnyError, match="refused for safety"):
        train(config, resume=True, progress=False)
    assert not (tmp_path / "pwned").exists()
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(SegAnyError, match="truncated or corrupt resume state"):
        train(config, resume=True, progress=False)


def test_a_mobilenet_model_starts_from_the_imagenet_weights(tmp_path, pretrained_dir):
    from segany.modeling.tflite_weights import load_mobilenet_v2

    weights = pretrained_dir / "mobilenet_v2_1.0_224_quant.tflite"
    model = build_model(TrainConfig(output=str(tmp_path), model="mobilenet_v2", pretrained_encoder=str(weights)))
    imported = load_mobilenet_v2(weights, output_stride=16, num_classes=None).state_dict()
    assert imported.keys() == model.image_encoder.trunk.state_dict().keys()
    for name, value in model.image_encoder.trunk.state_dict().items():
        assert torch.equal(value, imported[name]), name
    assert torch.all(model.image_encoder.neck[-1].weight == 0.1)  # the fresh neck and decoder: prepared
    with pytest.raises(SegAnyError, match="for the mobilenet_v2 encoder, not vit"):
        build_model(TrainConfig(output=str(tmp_path), model="vit_tiny", pretrained_encoder=str(weights)))


def test_images_without_masks_are_left_out_of_their_step(tmp_path, micro_init, shared_data):
    """An image with no object (a COCO image without labels, an unlabelled folder) adds nothing."""
    from PIL import Image

    folder = tmp_path / "unlabelled"
    folder.mkdir()
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(folder / "empty.png")
    config = config_for(tmp_path / "run", micro_init, shared_data, steps=2, images_per_step=2, rounds=2,
                        datasets={str(folder): 1.0, "pennfudan": 1.0})
    model = train(config, progress=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_copy_paste_adds_objects_and_leaves_the_other_draws_alone(monkeypatch):
    model = segany.random_model(MICRO, seed=0)
    scenes = {"synthetic": SyntheticScenes(count=20, size=128, seed=3)}

    def examples(copy_paste):
        data = StepData(model, scenes, {"synthetic": 1.0}, 4, seed=5, jitter=[0.5, 1.5], copy_paste=copy_paste)
        return [data[index] for index in range(12)]

    plain, pasted = examples(0.0), examples(1.0)
    # Every image got objects (each scene has some off the border to give) and so more masks.
    assert all(not torch.equal(p.image, a.image) for p, a in zip(pasted, plain))
    with_all_masks = StepData(model, scenes, {"synthetic": 1.0}, 64, seed=5, copy_paste=1.0)
    without = StepData(model, scenes, {"synthetic": 1.0}, 64, seed=5)
    assert all(len(with_all_masks[i].targets) > len(without[i].targets) for i in range(12))
    # The paste draws from its own generator: with a paste that changes nothing, every example
    # (image, mask subset of 4, jitter) is the one drawn without copy-paste.
    monkeypatch.setattr("segany.train.trainer.paste_objects", lambda image, masks, *rest: (image, masks))
    for p, a in zip(examples(1.0), plain):
        assert torch.equal(p.image, a.image) and torch.equal(p.targets, a.targets)


def test_copy_paste_is_a_probability(tmp_path, micro_init, shared_data):
    with pytest.raises(SegAnyError, match="copy_paste"):
        train(config_for(tmp_path, micro_init, shared_data, copy_paste=1.5), progress=False)
    model = train(config_for(tmp_path / "run", micro_init, shared_data, steps=2, copy_paste=1.0), progress=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())


# Reduced-depth variants of the other families, in their references' own checkpoint layouts.
FAMILY_VARIANTS = {
    "mobile_sam": dataclasses.replace(CONFIGS["vit_t"], encoder_stage_depths=(1, 1, 1, 1)),
    "sam_hq": SMALL_HQ_VIT_B,
    # SAM 2's .pt holds no config: only the released sizes load without one.
    "sam2": CONFIGS["hiera_t"],
}


@pytest.mark.parametrize("family", FAMILY_VARIANTS)
def test_train_init_fine_tunes_a_reference_checkpoint(tmp_path, shared_data, family):
    """`segany train --init x.pth` on a MobileSAM, SAM-HQ or SAM 2.1 checkpoint: the family is detected, the
    image encoder stays frozen, and for SAM-HQ only its HQ modules learn (as its paper trains)."""
    config = FAMILY_VARIANTS[family]
    checkpoint = reference.write_reference_checkpoint(config, tmp_path / f"{family}.pth", seed=9)
    run = tmp_path / "run.yaml"
    run.write_text(f"data_root: {shared_data}\nsteps: 2\nwarmup_steps: 1\nmasks_per_image: 2\nworkers: 0\n"
                   "validation_images: 1\ndatasets: {pennfudan: 1.0}\n")
    assert main(["train", str(run), "--init", str(checkpoint), "--output", str(tmp_path / "out")]) == 0
    start, tuned = segany.load_model(checkpoint), segany.load_model(tmp_path / "out" / "model.safetensors")
    assert start.config == tuned.config == config
    tuned_weights = tuned.state_dict()
    changed = {name for name, value in start.state_dict().items() if not torch.equal(value, tuned_weights[name])}
    assert changed and not any(name.startswith("image_encoder.") for name in changed)
    if config.decoder == "hq":
        assert {name.split(".")[1] for name in changed} == set(MaskDecoderHQ.HQ_MODULES)
    else:
        assert any(name.startswith("mask_decoder.transformer.") for name in changed)


def test_the_default_model_recipe_is_a_chain_of_valid_configs():
    """scripts/train_default.sh runs every configs/*.yaml in order: each stage's config is valid and
    starts from an earlier stage's model (the first from the ImageNet trunk); the bundled model is
    an average of stage models that takes in every model no stage starts from, and has the last
    stage's architecture."""
    script = (REPO / "scripts" / "train_default.sh").read_text(encoding="utf-8")
    stages = re.findall(r"^stage (\S+) (\S+)$", script, re.MULTILINE)
    assert sorted(path for _, path in stages) == sorted(f"configs/{p.name}" for p in (REPO / "configs").glob("*.yaml"))
    models, starts = [], set()
    for output, path in stages:
        config = TrainConfig.from_file(REPO / path)
        config.check()
        assert config.output == output, path
        if not models:
            assert config.init is None and config.pretrained_encoder, path
        else:
            assert config.init in models, path
            starts.add(config.init)
        models.append(f"{output}/model.safetensors")
    joined = script.replace("\\\n", " ")  # continuation lines
    (averaged,) = re.findall(r"^segany average (.+) -o segany/weights/default.safetensors$", joined, re.MULTILINE)
    averaged = averaged.split()
    assert set(averaged) <= set(models) and set(models) - starts <= set(averaged)
    assert config.model and segany.load_model("default").config == CONFIGS[config.model]
