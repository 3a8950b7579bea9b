#!/bin/sh
# Trains the bundled default model from random weights (docs/models.md) and installs it.
# Run from the repository root with ../shared/data beside it (about 80 minutes on 2 CPU cores).
# Each stage resumes where it stopped when the script is run again.
set -e
stage() {  # CONFIG OUTPUT
    if [ -f "$2/last.pt" ]; then segany train "$1" --resume; else segany train "$1"; fi
}
stage configs/default.yaml runs/default
stage configs/default-continue.yaml runs/default-continue
cp runs/default-continue/model.safetensors segany/weights/default.safetensors
