"""The training loop: data mixture, AdamW with warm-up and step decay, checkpoints, resume.

Every random choice of step k (which image, which masks, which prompts) is drawn from
generators seeded with (seed, k), so a run resumed from the checkpoint of step k continues
exactly as the uninterrupted run would, whatever the number of data workers.
"""

import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import distributed as dist
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from ..checkpoint import load_model, random_model, save_model
from ..errors import SegAnyError
from ..fileio import atomic_path
from ..modeling import Sam, SamConfig
from ..data import MaskDataset, open_dataset, shared_dataset
from ..data.datasets import SHARED_DATASETS
from ..eval.prompts import prompt_scores
from ..predictor import SamPredictor
from .interactive import Example, prepare_example, simulate_interaction
from .warmup import init_for_localisation, localisation_warmup

PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")
METRICS = ["step", "loss", "first_round_miou", "last_round_miou", "lr", "seconds"]
# validation.csv column -> PromptScores field
VALIDATION_SCORES = {"confident_miou": "confident", "oracle_miou": "oracle", "single_miou": "single",
                     "box_miou": "box"}


@dataclass
class TrainConfig:
    """What `segany train` reads from a YAML/JSON file (all fields optional)."""

    output: str = "runs/train"  # folder: checkpoints, metrics.csv, config.json
    model: Any = "vit_tiny"  # architecture for random weights: a name or SamConfig fields...
    init: Optional[str] = None  # ...or a checkpoint to start from (ours or official)
    data_root: str = "../shared/data"
    # shared dataset name or dataset path (see segany.data.open_dataset) -> weight in the mixture
    datasets: Dict[str, float] = field(default_factory=lambda: {"pennfudan": 1.0})
    steps: int = 1000  # one image per step
    masks_per_image: int = 16
    # From random weights only: steps of the localisation warm-up on discs before the real data
    # (see segany.train.warmup; about 0.1 s a step for the default model).
    localisation_steps: int = 500
    # From random weights only: the scale the image embedding starts at (the weight of the
    # encoder's last norm; 1 in SAM's init). See segany.train.warmup.init_for_localisation.
    initial_embedding_scale: float = 0.1
    lr: float = 8e-4
    warmup_steps: int = 250
    decay_at: List[float] = field(default_factory=lambda: [2 / 3, 26 / 27])  # fractions of steps; lr / 10 at each
    weight_decay: float = 0.1
    layer_decay: float = 0.8  # ViT block i of n gets lr * layer_decay ** (n - i)
    freeze: List[str] = field(default_factory=list)  # parts kept as they are
    jitter: Optional[List[float]] = None  # large-scale jitter scales, e.g. [0.1, 2.0]
    bf16: bool = False  # bfloat16 autocast for matrix products
    checkpoint_encoder: bool = False  # gradient checkpointing of the ViT blocks (less memory)
    checkpoint_every: int = 200
    validate_every: int = 0  # steps between validations (0: only at the end)
    validation_images: int = 8  # per dataset, from its evaluation split
    workers: int = 1  # data loading processes (0: in the training process)
    seed: int = 0

    @staticmethod
    def from_file(path: Path) -> "TrainConfig":
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                values = yaml.safe_load(text) or {}
            else:
                values = json.loads(text)
        except Exception as err:  # yaml and json errors name the line
            raise SegAnyError(f"{path}: not a readable config ({' '.join(str(err).split())})") from None
        known = set(TrainConfig.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise SegAnyError(f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return TrainConfig(**values)

    def check(self) -> None:
        for part in self.freeze:
            if part not in PARTS:
                raise SegAnyError(f"freeze: unknown part {part!r}; parts are {', '.join(PARTS)}")
        if not self.datasets or any(w <= 0 for w in self.datasets.values()):
            raise SegAnyError("datasets: give at least one dataset with a positive weight")
        if self.steps < 1 or self.masks_per_image < 1:
            raise SegAnyError("steps and masks_per_image must be at least 1")


class StepData(Dataset):
    """Item k is the training example of step k: drawn from the mixture with generator (seed, k)."""

    def __init__(self, model: Sam, datasets: Dict[str, MaskDataset], weights: Dict[str, float],
                 masks_per_image: int, seed: int, jitter: Optional[List[float]] = None) -> None:
        self.model, self.datasets, self.seed, self.jitter = model, datasets, seed, jitter
        self.names = list(datasets)
        total = sum(weights[n] for n in self.names)
        self.probabilities = [weights[n] / total for n in self.names]
        self.masks_per_image = masks_per_image

    def __len__(self) -> int:
        return 2**62  # one item per step, as many steps as asked: the sampler picks the range

    def __getitem__(self, step: int) -> Example:
        rng = np.random.default_rng([self.seed, step, 0])
        dataset = self.datasets[self.names[rng.choice(len(self.names), p=self.probabilities)]]
        sample = dataset[int(rng.integers(len(dataset)))]
        masks = sample.masks[sample.masks.reshape(len(sample.masks), -1).any(axis=1)]
        if len(masks) > self.masks_per_image:
            masks = masks[np.sort(rng.choice(len(masks), self.masks_per_image, replace=False))]
        example = prepare_example(self.model, sample.image, masks, self.jitter, rng)
        keep = example.targets.flatten(1).any(dim=1)  # masks too small for the low-res grid
        return Example(example.image, example.targets[keep])


def parameter_groups(model: Sam, config: TrainConfig) -> List[Dict[str, Any]]:
    """AdamW groups: layer-wise decayed lr in the ViT, no weight decay on norms and biases."""
    blocks = len(model.image_encoder.blocks)
    groups: Dict[Any, Dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        depth = blocks + 1  # everything outside the encoder trunk: full lr
        if name.startswith("image_encoder."):
            if name.startswith("image_encoder.blocks."):
                depth = int(name.split(".")[2]) + 1
            elif not name.startswith("image_encoder.neck."):
                depth = 0  # patch and position embeddings
        decay = 0.0 if parameter.ndim == 1 or name.endswith(".bias") else config.weight_decay
        key = (depth, decay)
        group = groups.setdefault(key, {"params": [], "weight_decay": decay,
                                        "lr_scale": config.layer_decay ** (blocks + 1 - depth)})
        group["params"].append(parameter)
    return list(groups.values())


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up to config.lr, then / 10 at each of config.decay_at (fractions of steps)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return config.lr * 0.1 ** sum(step >= fraction * config.steps for fraction in config.decay_at)


def build_model(config: TrainConfig) -> Sam:
    if config.init:
        model = load_model(config.init)
    else:
        architecture = SamConfig.from_dict(config.model) if isinstance(config.model, dict) else config.model
        model = random_model(architecture, seed=config.seed)
        init_for_localisation(model, config.initial_embedding_scale)
    for part in config.freeze:
        getattr(model, part).requires_grad_(False)
    model.image_encoder.gradient_checkpointing = config.checkpoint_encoder
    return model.train()


def train(config: TrainConfig, resume: bool = False, stop_after: Optional[int] = None, progress: bool = True) -> Sam:
    """Train as `config` says; with resume=True continue from `output/last.pt`.

    stop_after: train at most this many steps in this call, save, and return (resume later).
    Started by `torchrun` (WORLD_SIZE > 1), every process trains on its own images and the
    gradients are averaged (gloo); files are written by rank 0 alone.
    """
    config.check()
    rank, world = _process_group()
    output = Path(config.output)
    state_path = output / "last.pt"
    if resume and not state_path.exists():
        raise SegAnyError(f"{state_path}: nothing to resume from")
    if not resume and state_path.exists():
        raise SegAnyError(f"{output}: holds a run already; resume it (--resume) or choose another output")
    if rank == 0:
        output.mkdir(parents=True, exist_ok=True)
        (output / "config.json").write_text(json.dumps(asdict(config), indent=1))

    model = build_model(config)
    optimizer = torch.optim.AdamW(parameter_groups(model, config), lr=config.lr, betas=(0.9, 0.999))
    start = 0
    if resume:
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    elif not config.init and config.localisation_steps:
        # Every process warms up alike (same seed), so a group starts in sync.
        oracle = localisation_warmup(model, config.localisation_steps, config.seed, progress=progress and rank == 0)
        if rank == 0:
            print(f"localisation warm-up: oracle IoU on discs {oracle:.3f}", file=sys.stderr)
    end = config.steps if stop_after is None else min(config.steps, start + stop_after)

    datasets = {name: open_dataset(name, "train", config.data_root) for name in config.datasets}
    data = StepData(model, datasets, config.datasets, config.masks_per_image, config.seed, config.jitter)
    # Process `rank` of `world` takes example step * world + rank: one process reads what it always did.
    sampler = range(start * world + rank, end * world, world)
    loader = DataLoader(data, sampler=sampler, batch_size=None, num_workers=config.workers)
    log = _RunLog(output, start, config.steps) if rank == 0 else None
    bar = tqdm(zip(range(start, end), loader), total=config.steps, initial=start,
               disable=not progress or rank != 0, desc="segany train", unit="step")
    try:
        for step, example in bar:
            row = _train_step(model, optimizer, config, step, step * world + rank, example, world)
            done = step + 1
            if log is not None:
                log.write(row)
                if not math.isnan(row["loss"]):  # a step with masks
                    bar.set_postfix(loss=f"{row['loss']:.4f}", miou=f"{row['last_round_miou']:.3f}")
                if done % config.checkpoint_every == 0 or done == end:
                    _save_state(state_path, model, optimizer, done)
                if done == config.steps or (config.validate_every and done % config.validate_every == 0):
                    validate(model, config, done, output / "validation.csv", bar, log)
    finally:
        if log is not None:
            log.close()
    if rank == 0:
        save_model(model.eval(), output / "model.safetensors")
    return model


def _process_group() -> Tuple[int, int]:
    """(rank, world size): from torchrun's environment, joining its process group; (0, 1) alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


class _RunLog:
    """metrics.csv (line-buffered, so it can be watched) and TensorBoard events in output/tensorboard.

    On resume, rows and events after the checkpoint are dropped: those steps are trained again.
    """

    def __init__(self, output: Path, start: int, steps: int) -> None:
        path = output / "metrics.csv"
        kept = _metrics_before(path, start)
        with atomic_path(path) as tmp, tmp.open("w", newline="") as file:
            csv.writer(file).writerows([METRICS] + kept)
        self.file = path.open("a", newline="", buffering=1)
        self.csv = csv.writer(self.file)
        self.board = SummaryWriter(str(output / "tensorboard"), purge_step=start)

    def write(self, row: Dict[str, float]) -> None:
        self.csv.writerow([int(row["step"])] + [_format(row[name]) for name in METRICS[1:]])
        for name in METRICS[1:]:
            if not math.isnan(row[name]):
                self.board.add_scalar(f"train/{name}", row[name], int(row["step"]))

    def validation(self, step: int, dataset: str, scores: Dict[str, float]) -> None:
        for name, value in scores.items():
            self.board.add_scalar(f"validation/{dataset}/{name}", value, step)

    def close(self) -> None:
        self.file.close()
        self.board.close()


def _format(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6g}"


def _train_step(model: Sam, optimizer: torch.optim.Optimizer, config: TrainConfig, step: int, example_index: int,
                example: Example, world: int) -> Dict[str, float]:
    """One optimizer step (on one image per process); returns its metrics.

    An image whose masks all vanished on the low-res grid (e.g. jittered very small) has nothing
    to learn: alone, the step is skipped; in a group, the process contributes a zero gradient.
    """
    began = time.perf_counter()
    rate = learning_rate(config, step)
    row = {"step": step, "loss": float("nan"), "first_round_miou": float("nan"),
           "last_round_miou": float("nan"), "lr": rate, "seconds": 0.0}
    if not len(example.targets) and world == 1:
        return row
    for group in optimizer.param_groups:
        group["lr"] = rate * group["lr_scale"]
    optimizer.zero_grad(set_to_none=True)
    if len(example.targets):
        torch.manual_seed(config.seed * 1_000_003 + example_index)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
            with torch.set_grad_enabled("image_encoder" not in config.freeze):
                embedding = model.image_encoder(example.image[None])
            loss, values = simulate_interaction(model, embedding, example.targets,
                                                np.random.default_rng([config.seed, example_index, 1]))
        loss.backward()
        row.update(values, loss=loss.item())
    if world > 1:
        _average_gradients(model, world)
    optimizer.step()
    row["seconds"] = time.perf_counter() - began
    return row


def _average_gradients(model: Sam, world: int) -> None:
    """All-reduce the gradients of the group as one flat buffer; a missing gradient counts as zero."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    for parameter, grad in zip(parameters, flat.split([g.numel() for g in grads])):
        parameter.grad = grad.view_as(parameter)


def validate(model: Sam, config: TrainConfig, step: int, path: Path, bar: Optional[tqdm] = None,
             log: Optional[_RunLog] = None) -> None:
    """1-point and box mIoU on the evaluation split of every shared training dataset, appended to `path`.

    Datasets given by path are read whole for training: they have no evaluation split here.
    """
    model.eval()
    predictor = SamPredictor(model)
    new_file = not path.exists()
    with path.open("a", newline="") as file:
        writer = csv.writer(file)
        if new_file:
            writer.writerow(["step", "dataset", *VALIDATION_SCORES, "objects"])
        for name in filter(SHARED_DATASETS.__contains__, config.datasets):
            # BSDS500's test split is kept for edge detection; its val split serves here.
            dataset = shared_dataset(name, "val" if name == "bsds500" else "eval", config.data_root)
            scores = prompt_scores(predictor, dataset, config.validation_images)
            values = {column: getattr(scores, field) for column, field in VALIDATION_SCORES.items()}
            writer.writerow([step, name, *(f"{v:.4f}" for v in values.values()), scores.objects])
            message = (f"step {step} {name}: 1-point mIoU {scores.confident:.3f} (oracle {scores.oracle:.3f}), "
                       f"box mIoU {scores.box:.3f}")
            (bar.write if bar is not None else print)(message)
            if log is not None:
                log.validation(step, name, values)
    model.train()


def _metrics_before(path: Path, step: int) -> List[List[str]]:
    """Rows of an existing metrics.csv for the steps before `step`, without the header."""
    if not path.exists():
        return []
    with path.open(newline="") as file:
        return [row for row in list(csv.reader(file))[1:] if int(row[0]) < step]


def _save_state(path: Path, model: Sam, optimizer: torch.optim.Optimizer, step: int) -> None:
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, tmp)
