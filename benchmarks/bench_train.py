"""Time training steps of a `segany train` config on this machine.

One step as `segany train` runs it (`images_per_step` images, up to `masks_per_image` masks
each, `rounds` interaction rounds, forward, backward, AdamW), repeated on one fixed batch of
real images from `../shared/data` so that every repeat does the same work. Two columns: the
trainer as it is, and the same step with the decoder's high-resolution features copied for each
prompt in the images' own layout and laid out for the upscaling in every round (how training
decoded them before `MaskDecoder.per_prompt_features`); the ratio is that / as it is. Only
models whose decoder takes SAM 2-style features differ.

    python benchmarks/bench_train.py [--config configs/default_768.yaml] [--data dsb2018 --data coco128-seg]
                                     [--repeats 3]
"""

import argparse
import dataclasses
import platform
import statistics
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from segany.data import shared_dataset
from segany.modeling.mask_decoder import MaskDecoder
from segany.train.interactive import prepare_example
from segany.train.trainer import TrainConfig, _train_step, build_model, parameter_groups

REPO = Path(__file__).resolve().parents[1]
MIN_PIXELS = 300  # masks smaller than this are left out, so every kept one survives the low-res grid


def per_prompt_copies(self, high_res_features, grid, image_index):
    """The image-shaped features copied for each prompt (laid out again by every decoder call)."""
    return tuple(features.index_select(0, image_index) for features in high_res_features)


def fixed_batch(model, config: TrainConfig, data_names, data_root: Path):
    """`images_per_step` training images with `masks_per_image` masks of at least MIN_PIXELS
    pixels each, taken from the `data_names` in turn."""
    datasets = [shared_dataset(name, "train", data_root) for name in data_names]
    samples = (dataset[i] for i in range(max(map(len, datasets))) for dataset in datasets if i < len(dataset))
    examples = []
    for sample in samples:
        masks = np.asarray(sample.masks)
        masks = masks[masks.reshape(len(masks), -1).sum(axis=1) >= MIN_PIXELS][: config.masks_per_image]
        if len(masks) == config.masks_per_image:
            examples.append(prepare_example(model, sample.image, masks))
            if len(examples) == config.images_per_step:
                return examples
    raise SystemExit(f"fewer than {config.images_per_step} images with {config.masks_per_image} masks "
                     f"in {', '.join(data_names)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "default_768.yaml")
    parser.add_argument("--data", action="append", help="shared datasets to draw the batch from "
                        "(default: dsb2018 and coco128-seg)")
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    # Random weights (the time does not depend on them); the config's frozen parts stay frozen.
    config = dataclasses.replace(TrainConfig.from_file(args.config), init=None, pretrained_encoder=None)
    model = build_model(config)
    examples = fixed_batch(model, config, args.data or ["dsb2018", "coco128-seg"], args.data_root)

    def median_step_seconds() -> float:
        optimizer = torch.optim.AdamW(parameter_groups(model, config), lr=config.lr)
        seconds = [_train_step(model, optimizer, config, step, step * len(examples), examples, 1)["seconds"]
                   for step in range(args.repeats + 1)]
        return statistics.median(seconds[1:])  # the first warms up

    ours = median_step_seconds()
    with mock.patch.object(MaskDecoder, "per_prompt_features", per_prompt_copies):
        copies = median_step_seconds()
    masks = sum(len(example.targets) for example in examples)
    print(f"{args.config.name} ({config.model}, {model.image_size} px), "
          f"{len(examples)} images x {config.masks_per_image} masks, {config.rounds} rounds, "
          f"frozen {config.freeze or 'nothing'}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    print("\n| seconds per step (median of %d) | per-prompt copies | segany | ratio |" % args.repeats)
    print("|---|---:|---:|---:|")
    print(f"| {masks} masks | {copies:.2f} | {ours:.2f} | {copies / ours:.2f} |")


if __name__ == "__main__":
    main()
