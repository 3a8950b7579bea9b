"""The training loop: data mixture, AdamW with warm-up and step decay, checkpoints, resume.

Every random choice of step k (which image, which masks, which prompts) is drawn from
generators seeded with (seed, k), so a run resumed from the checkpoint of step k continues
exactly as the uninterrupted run would, whatever the number of data workers.
"""

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..checkpoint import load_model, random_model, save_model
from ..errors import SegAnyError
from ..fileio import atomic_path
from ..modeling import Sam, SamConfig
from ..data import MaskDataset, shared_dataset
from ..eval.points import single_point_scores
from ..predictor import SamPredictor
from .interactive import Example, prepare_example, simulate_interaction

PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")
METRICS = ["step", "loss", "first_round_miou", "last_round_miou", "lr", "seconds"]


@dataclass
class TrainConfig:
    """What `segany train` reads from a YAML/JSON file (all fields optional)."""

    output: str = "runs/train"  # folder: checkpoints, metrics.csv, config.json
    model: Any = "vit_tiny"  # architecture for random weights: a name or SamConfig fields...
    init: Optional[str] = None  # ...or a checkpoint to start from (ours or official)
    data_root: str = "../shared/data"
    datasets: Dict[str, float] = field(default_factory=lambda: {"pennfudan": 1.0})  # name -> weight
    steps: int = 1000  # one image per step
    masks_per_image: int = 16
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
    for part in config.freeze:
        getattr(model, part).requires_grad_(False)
    model.image_encoder.gradient_checkpointing = config.checkpoint_encoder
    return model.train()


def train(config: TrainConfig, resume: bool = False, stop_after: Optional[int] = None, progress: bool = True) -> Sam:
    """Train as `config` says; with resume=True continue from `output/last.pt`.

    stop_after: train at most this many steps in this call, save, and return (resume later).
    """
    config.check()
    output = Path(config.output)
    state_path = output / "last.pt"
    if resume and not state_path.exists():
        raise SegAnyError(f"{state_path}: nothing to resume from")
    if not resume and state_path.exists():
        raise SegAnyError(f"{output}: holds a run already; resume it (--resume) or choose another output")
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
    end = config.steps if stop_after is None else min(config.steps, start + stop_after)

    datasets = {name: shared_dataset(name, "train", config.data_root) for name in config.datasets}
    data = StepData(model, datasets, config.datasets, config.masks_per_image, config.seed, config.jitter)
    loader = DataLoader(data, sampler=range(start, end), batch_size=None, num_workers=config.workers)
    encoder_frozen = "image_encoder" in config.freeze
    metrics_path = output / "metrics.csv"
    kept = _metrics_before(metrics_path, start)  # steps after the checkpoint are written again
    with atomic_path(metrics_path) as tmp, tmp.open("w", newline="") as file:
        csv.writer(file).writerows([METRICS] + kept)
    with metrics_path.open("a", newline="") as metrics_file:
        writer = csv.writer(metrics_file)
        bar = tqdm(zip(range(start, end), loader), total=config.steps, initial=start, disable=not progress,
                   desc="segany train", unit="step")
        for step, example in bar:
            if len(example.targets):
                row = _train_step(model, optimizer, config, step, example, encoder_frozen)
                bar.set_postfix(loss=row[1], miou=row[3])
                writer.writerow(row)
            else:  # every mask fell between grid cells (e.g. jittered very small): nothing to learn
                writer.writerow([step, "nan", "nan", "nan", "0", "0"])
            done = step + 1
            if done % config.checkpoint_every == 0 or done == end:
                metrics_file.flush()
                _save_state(state_path, model, optimizer, done)
            if done == config.steps or (config.validate_every and done % config.validate_every == 0):
                validate(model, config, done, output / "validation.csv", bar)
    save_model(model.eval(), output / "model.safetensors")
    return model


def _train_step(model: Sam, optimizer: torch.optim.Optimizer, config: TrainConfig, step: int, example: Example,
                encoder_frozen: bool) -> List[str]:
    """One optimizer step on one image; returns its metrics row."""
    began = time.perf_counter()
    rate = learning_rate(config, step)
    for group in optimizer.param_groups:
        group["lr"] = rate * group["lr_scale"]
    torch.manual_seed(config.seed * 1_000_003 + step)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
        with torch.set_grad_enabled(not encoder_frozen):
            embedding = model.image_encoder(example.image[None])
        loss, values = simulate_interaction(model, embedding, example.targets,
                                            np.random.default_rng([config.seed, step, 1]))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return [str(step), f"{loss.item():.6f}", f"{values['first_round_miou']:.4f}", f"{values['last_round_miou']:.4f}",
            f"{rate:.3e}", f"{time.perf_counter() - began:.3f}"]


def validate(model: Sam, config: TrainConfig, step: int, path: Path, bar: Optional[tqdm] = None) -> None:
    """Single-point mIoU on the evaluation split of every training dataset, appended to `path`."""
    model.eval()
    predictor = SamPredictor(model)
    new_file = not path.exists()
    with path.open("a", newline="") as file:
        writer = csv.writer(file)
        if new_file:
            writer.writerow(["step", "dataset", "confident_miou", "oracle_miou", "single_miou", "objects"])
        for name in config.datasets:
            # BSDS500's test split is kept for edge detection; its val split serves here.
            dataset = shared_dataset(name, "val" if name == "bsds500" else "eval", config.data_root)
            scores = single_point_scores(predictor, dataset, config.validation_images)
            writer.writerow([step, name, f"{scores.confident:.4f}", f"{scores.oracle:.4f}", f"{scores.single:.4f}",
                             scores.objects])
            message = f"step {step} {name}: 1-point mIoU {scores.confident:.3f} (oracle {scores.oracle:.3f})"
            (bar.write if bar is not None else print)(message)
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
