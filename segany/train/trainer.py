"""The training loop: data mixture, AdamW with warm-up and step decay, checkpoints, resume.

A step trains on `images_per_step` images (per process), their masks decoded as one batch.
Every random choice of example e (which image, which masks, which prompts) is drawn from
generators seeded with (seed, e), so a run resumed from the checkpoint of step k continues
exactly as the uninterrupted run would, whatever the number of data workers. The resume state
(`last.pt`) holds tensors and plain values only and is read with `torch.load(weights_only=True)`.
"""

from ..extras import require

require("train", "segany.train.trainer")

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
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from ..checkpoint import load_model, load_tensor_pickle, random_model, save_model
from ..errors import SegAnyError
from ..validation import check_field_types, check_number
from ..fileio import atomic_path
from ..modeling import Sam, SamConfig
from ..modeling.mask_decoder_hq import MaskDecoderHQ
from ..data import MaskDataset, Sample, open_dataset, shared_dataset
from ..data.copy_paste import MAX_PASTED, paste_objects
from ..data.datasets import SHARED_DATASETS
from ..eval.prompts import prompt_scores
from ..predictor import SamPredictor
from .interactive import ROUNDS, Example, prepare_example, simulate_interaction
from .losses import FOCAL_WEIGHT
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
    model: Any = None  # architecture: a name or SamConfig fields (None: vit_tiny, or init's own)
    # A checkpoint to start from (ours or official). With `model`, a larger architecture grown from
    # it: the checkpoint's tensors fill the parameters of the same names, the rest start new.
    init: Optional[str] = None
    # With `model`: ImageNet weights for a mobilenet_v2 encoder's trunk, a MobileNetV2 1.0 .tflite file
    # (segany.modeling.tflite_weights); the neck, prompt encoder and decoder start from random weights.
    pretrained_encoder: Optional[str] = None
    data_root: str = "../shared/data"
    # shared dataset name or dataset path (see segany.data.open_dataset) -> weight in the mixture
    datasets: Dict[str, float] = field(default_factory=lambda: {"pennfudan": 1.0})
    steps: int = 1000
    images_per_step: int = 1  # per process; their masks are decoded as one batch
    masks_per_image: int = 16
    rounds: int = ROUNDS  # simulated interaction rounds per mask (segany.train.interactive)
    focal_weight: float = FOCAL_WEIGHT  # focal : dice = focal_weight : 1 (the paper's 20; see docs/models.md)
    # Without `init`: steps of the localisation warm-up of the fresh decoder on discs before the
    # real data (see segany.train.warmup; about 0.1 s a step for the default model).
    localisation_steps: int = 500
    # Without `init`: the scale the image embedding starts at (the weight of the encoder's last
    # norm; 1 in SAM's init). See segany.train.warmup.init_for_localisation.
    initial_embedding_scale: float = 0.1
    lr: float = 8e-4
    warmup_steps: int = 250
    decay_at: List[float] = field(default_factory=lambda: [2 / 3, 26 / 27])  # fractions of steps; lr / 10 at each
    weight_decay: float = 0.1
    layer_decay: float = 0.8  # encoder block i of n gets lr * layer_decay ** (n - i)
    # Modules kept as they are: parts (image_encoder, prompt_encoder, mask_decoder) or any module
    # below them by its dotted name (e.g. image_encoder.trunk, the pretrained part of mobilenet_v2).
    # None: `default_frozen` (fine-tuning from `init` keeps the image encoder).
    freeze: Optional[List[str]] = None
    jitter: Optional[List[float]] = None  # large-scale jitter scales, e.g. [0.1, 2.0]
    # Probability that a training image gets 1-3 whole objects of another image of the mixture
    # pasted into it at random sizes (segany.data.copy_paste).
    copy_paste: float = 0.0
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
        if not isinstance(values, dict):
            raise SegAnyError(f"{path}: expected a mapping of TrainConfig fields, found {type(values).__name__}")
        known = set(TrainConfig.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise SegAnyError(f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return TrainConfig(**values)

    def check(self) -> None:
        """SegAnyError naming the first field of a wrong type or out of its range."""
        check_field_types(self, "train config")
        if self.model is not None and not isinstance(self.model, (str, dict)):
            raise SegAnyError(f"train config: model must be a config name or a mapping of its fields, got {self.model!r}")
        for name in self.freeze or []:
            if name.split(".")[0] not in PARTS:
                raise SegAnyError(f"freeze: unknown part {name!r}; parts are {', '.join(PARTS)} "
                                  "(or a module below one, e.g. image_encoder.trunk)")
        if not self.datasets or any(w <= 0 for w in self.datasets.values()):
            raise SegAnyError("datasets: give at least one dataset with a positive weight")
        for name in ("steps", "images_per_step", "masks_per_image", "rounds", "checkpoint_every",
                     "validation_images"):
            check_number(f"train config: {name}", getattr(self, name), integer=True, low=1)
        for name in ("localisation_steps", "warmup_steps", "validate_every", "workers"):
            check_number(f"train config: {name}", getattr(self, name), integer=True, low=0)
        for name in ("lr", "initial_embedding_scale"):
            check_number(f"train config: {name}", getattr(self, name), low=0, low_open=True)
        for name in ("weight_decay", "focal_weight"):
            check_number(f"train config: {name}", getattr(self, name), low=0)
        check_number("train config: copy_paste", self.copy_paste, low=0, high=1)
        check_number("train config: layer_decay", self.layer_decay, low=0, high=1, low_open=True)
        for fraction in self.decay_at:
            check_number("train config: decay_at", fraction, low=0, high=1)
        if self.jitter is not None and (len(self.jitter) != 2 or not 0 < self.jitter[0] <= self.jitter[1]):
            raise SegAnyError(f"train config: jitter must be [smallest, largest] scales, 0 < smallest <= largest, "
                              f"got {self.jitter}")
        if self.pretrained_encoder and self.init:
            raise SegAnyError("pretrained_encoder is for a new model (model:), not with init:")


class StepData(Dataset):
    """Item e is training example e: drawn from the mixture with generator (seed, e)."""

    def __init__(self, model: Sam, datasets: Dict[str, MaskDataset], weights: Dict[str, float],
                 masks_per_image: int, seed: int, jitter: Optional[List[float]] = None,
                 copy_paste: float = 0.0) -> None:
        self.model, self.datasets, self.seed, self.jitter = model, datasets, seed, jitter
        self.copy_paste = copy_paste
        self.names = list(datasets)
        total = sum(weights[n] for n in self.names)
        self.probabilities = [weights[n] / total for n in self.names]
        self.masks_per_image = masks_per_image

    def __len__(self) -> int:
        return 2**62  # one item per step, as many steps as asked: the sampler picks the range

    def _draw(self, rng: np.random.Generator) -> Sample:
        dataset = self.datasets[self.names[rng.choice(len(self.names), p=self.probabilities)]]
        return dataset[int(rng.integers(len(dataset)))]

    def __getitem__(self, index: int) -> Example:
        rng = np.random.default_rng([self.seed, index, 0])
        sample = self._draw(rng)
        image, masks = sample.image, sample.masks
        # Its own generator: with copy_paste 0 every draw of `rng` stays what it always was.
        paste_rng = np.random.default_rng([self.seed, index, 1])
        if self.copy_paste and paste_rng.random() < self.copy_paste:
            donor = self._draw(paste_rng)
            image, masks = paste_objects(image, masks, donor.image, donor.masks,
                                         int(paste_rng.integers(1, MAX_PASTED + 1)), paste_rng)
        masks = masks[masks.any(axis=(1, 2))]  # an image may have none
        if len(masks) > self.masks_per_image:
            masks = masks[np.sort(rng.choice(len(masks), self.masks_per_image, replace=False))]
        example = prepare_example(self.model, image, masks, self.jitter, rng)
        keep = example.targets.flatten(1).any(dim=1)  # masks too small for the low-res grid
        return Example(example.image, example.targets[keep])


def parameter_groups(model: Sam, config: TrainConfig) -> List[Dict[str, Any]]:
    """AdamW groups: layer-wise decayed lr in the encoder, no weight decay on norms and biases."""
    encoder = model.image_encoder
    top = encoder.num_layers  # the encoder's neck and everything after it: full lr
    groups: Dict[Any, Dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        prefix = "image_encoder."
        depth = encoder.layer_depth(name[len(prefix):]) if name.startswith(prefix) else top
        decay = 0.0 if parameter.ndim == 1 or name.endswith(".bias") else config.weight_decay
        key = (depth, decay)
        group = groups.setdefault(key, {"params": [], "weight_decay": decay,
                                        "lr_scale": config.layer_decay ** (top - depth)})
        group["params"].append(parameter)
    return list(groups.values())


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up to config.lr, then / 10 at each of config.decay_at (fractions of steps)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return config.lr * 0.1 ** sum(step >= fraction * config.steps for fraction in config.decay_at)


def build_model(config: TrainConfig) -> Sam:
    if config.init and config.model is None:
        model = load_model(config.init)
    else:
        try:
            architecture = SamConfig.from_dict(config.model) if isinstance(config.model, dict) else config.model
            model = random_model(architecture or "vit_tiny", seed=config.seed)
        except (ValueError, TypeError) as err:
            raise SegAnyError(f"model: {err}") from None
        if config.init:
            grow_from(model, load_model(config.init), config.init)
        else:
            if config.pretrained_encoder:
                _load_pretrained_encoder(model, config.pretrained_encoder)
            init_for_localisation(model, config.initial_embedding_scale)
    modules = dict(model.named_modules())
    for name in default_frozen(model, bool(config.init)) if config.freeze is None else config.freeze:
        if name not in modules:
            raise SegAnyError(f"freeze: this model has no module {name!r}")
        modules[name].requires_grad_(False)
    model.image_encoder.gradient_checkpointing = config.checkpoint_encoder
    return training_mode(model)


def training_mode(model: Sam) -> Sam:
    """`model.train()`, except that frozen batch norms (MobileSAM's TinyViT) keep their running
    statistics: a frozen module must come out of a run as it went in."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters()):
            module.eval()
    return model


def default_frozen(model: Sam, fine_tuning: bool) -> List[str]:
    """The modules a run keeps as they are unless its config says: nothing from scratch; when
    fine-tuning, the image encoder, and for SAM-HQ everything but its HQ modules (as its paper
    trains it: SAM's own weights stay SAM's)."""
    if not fine_tuning:
        return []
    if model.config.decoder != "hq":
        return ["image_encoder"]
    sam_modules = [f"mask_decoder.{name}" for name, _ in model.mask_decoder.named_children()
                   if name not in MaskDecoderHQ.HQ_MODULES]
    return ["image_encoder", "prompt_encoder", *sam_modules]


def grow_from(model: Sam, smaller: Sam, source: str) -> None:
    """Copy every tensor of `smaller` into the parameter or buffer of `model` of the same name and
    shape; SegAnyError if one has no place in `model` (not a smaller model of the same kind)."""
    target = model.state_dict()
    misfits = [name for name, tensor in smaller.state_dict().items()
               if name not in target or target[name].shape != tensor.shape]
    if misfits:
        raise SegAnyError(f"init: {source} does not fit model: {len(misfits)} tensor(s) have no place of their "
                          f"name and shape in it, e.g. {misfits[0]}")
    model.load_state_dict(smaller.state_dict(), strict=False)


def _load_pretrained_encoder(model: Sam, path: str) -> None:
    from ..modeling.tflite_weights import mobilenet_v2_state_dict

    if model.config.encoder != "mobilenet_v2":
        raise SegAnyError(f"pretrained_encoder: a .tflite MobileNetV2 is for the mobilenet_v2 encoder, "
                          f"not {model.config.encoder}")
    trunk = model.image_encoder.trunk
    trunk.load_state_dict(mobilenet_v2_state_dict(path, trunk))


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
    datasets = {name: open_dataset(name, "train", config.data_root) for name in config.datasets}  # fail early
    if rank == 0:
        output.mkdir(parents=True, exist_ok=True)
        (output / "config.json").write_text(json.dumps(asdict(config), indent=1))

    model = build_model(config)
    optimizer = torch.optim.AdamW(parameter_groups(model, config), lr=config.lr, betas=(0.9, 0.999))
    start = 0
    if resume:
        state = _load_state(state_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    elif not config.init and config.localisation_steps:
        # Every process warms up alike (same seed), so a group starts in sync.
        oracle = localisation_warmup(model, config.localisation_steps, config.seed, progress=progress and rank == 0)
        if rank == 0:
            print(f"localisation warm-up: oracle IoU on discs {oracle:.3f}", file=sys.stderr)
    end = config.steps if stop_after is None else min(config.steps, start + stop_after)

    data = StepData(model, datasets, config.datasets, config.masks_per_image, config.seed, config.jitter,
                    config.copy_paste)
    # Process `rank` of `world` takes examples (step * world + rank) * B + j: one process reads what it always did.
    per_step = config.images_per_step
    batches = [[(step * world + rank) * per_step + j for j in range(per_step)] for step in range(start, end)]
    loader = DataLoader(data, batch_sampler=batches, collate_fn=list, num_workers=config.workers)
    log = _RunLog(output, start, config.steps) if rank == 0 else None
    bar = tqdm(zip(range(start, end), loader), total=config.steps, initial=start,
               disable=not progress or rank != 0, desc="segany train", unit="step")
    try:
        for step, examples in bar:
            row = _train_step(model, optimizer, config, step, (step * world + rank) * per_step, examples, world)
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


def _train_step(model: Sam, optimizer: torch.optim.Optimizer, config: TrainConfig, step: int, first_example: int,
                examples: List[Example], world: int) -> Dict[str, float]:
    """One optimizer step (on `images_per_step` images per process); returns its metrics.

    Images whose masks all vanished on the low-res grid (e.g. jittered very small) have nothing
    to learn and are left out; when none is left, a lone process skips the step and a process
    in a group contributes a zero gradient.
    """
    began = time.perf_counter()
    rate = learning_rate(config, step)
    row = {"step": step, "loss": float("nan"), "first_round_miou": float("nan"),
           "last_round_miou": float("nan"), "lr": rate, "seconds": 0.0}
    examples = [example for example in examples if len(example.targets)]
    if not examples and world == 1:
        return row
    for group in optimizer.param_groups:
        group["lr"] = rate * group["lr_scale"]
    optimizer.zero_grad(set_to_none=True)
    if examples:
        torch.manual_seed(config.seed * 1_000_003 + first_example)
        images = torch.stack([example.image for example in examples])  # B, 3, S, S
        targets = torch.cat([example.targets for example in examples])  # N, S/4, S/4
        image_index = torch.repeat_interleave(torch.arange(len(examples)),
                                              torch.tensor([len(example.targets) for example in examples]))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
            with torch.set_grad_enabled(any(p.requires_grad for p in model.image_encoder.parameters())):
                embeddings, early = model.run_image_encoder(images)
            high_res = model.mask_decoder.image_features(embeddings, early)
            loss, values = simulate_interaction(model, embeddings, targets,
                                                np.random.default_rng([config.seed, first_example, 1]),
                                                image_index, config.rounds, config.focal_weight, high_res)
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
    training_mode(model)


def _metrics_before(path: Path, step: int) -> List[List[str]]:
    """Rows of an existing metrics.csv for the steps before `step`, without the header."""
    if not path.exists():
        return []
    with path.open(newline="") as file:
        return [row for row in list(csv.reader(file))[1:] if int(row[0]) < step]


def _save_state(path: Path, model: Sam, optimizer: torch.optim.Optimizer, step: int) -> None:
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, tmp)


def _load_state(path: Path) -> Dict[str, Any]:
    """The resume state written by `_save_state`; anything else is refused with one line."""
    state = load_tensor_pickle(path, "resume state of segany train")
    if not isinstance(state, dict) or not {"model", "optimizer", "step"} <= state.keys() \
            or not isinstance(state["step"], int):
        raise SegAnyError(f"{path}: not a resume state of segany train (expected model, optimizer and step)")
    return state
