"""Data-parallel training: processes see different images and stay in sync."""

import csv
import json
import os
import socket
import subprocess
import sys

import torch
import torch.multiprocessing as mp

import segany
from conftest import MICRO
from segany.train.trainer import TrainConfig, train

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(output, init, data_root) -> TrainConfig:
    return TrainConfig(output=str(output), init=str(init), data_root=str(data_root), steps=3, masks_per_image=3,
                       warmup_steps=1, checkpoint_every=10, workers=0, validation_images=1,
                       datasets={"pennfudan": 1.0, "synthetic": 1.0})


def _rank(rank: int, port: int, config: TrainConfig, result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    model = train(config, progress=False)
    torch.save(model.state_dict(), os.path.join(result_dir, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_processes_stay_in_sync_and_learn_from_different_images(tmp_path, shared_data):
    init = tmp_path / "init.safetensors"
    segany.save_model(segany.random_model(MICRO, seed=5), init)
    config = _config(tmp_path / "group", init, shared_data)
    mp.spawn(_rank, args=(_free_port(), config, str(tmp_path)), nprocs=WORLD, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for name, value in states[0].items():
        assert torch.equal(value, states[1][name]), name
    alone = train(_config(tmp_path / "alone", init, shared_data), progress=False).state_dict()
    # Rank 0 reads the images a lone process reads; averaged with rank 1's other images, it moves elsewhere.
    assert not torch.equal(alone["mask_decoder.iou_token.weight"], states[0]["mask_decoder.iou_token.weight"])
    assert segany.load_model(tmp_path / "group" / "model.safetensors").config == MICRO


def test_torchrun_starts_a_group_from_the_command_line(tmp_path, shared_data):
    init = tmp_path / "init.safetensors"
    segany.save_model(segany.random_model(MICRO, seed=5), init)
    config_file = tmp_path / "run.json"
    values = vars(_config(tmp_path / "run", init, shared_data))
    config_file.write_text(json.dumps(values))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
               "-m", "segany", "train", str(config_file)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with (tmp_path / "run" / "metrics.csv").open() as file:
        assert [row["step"] for row in csv.DictReader(file)] == ["0", "1", "2"]  # one row per step, rank 0's
    assert (tmp_path / "run" / "model.safetensors").exists()
    assert list((tmp_path / "run" / "tensorboard").iterdir())
