#!/bin/sh
# Trains the bundled default model (docs/models.md) and installs it. Run from the repository root
# with ../shared/data and ../shared/pretrained beside it. Run again, it resumes where it stopped.
#
# Extra training data, outside the repository (never committed):
#   git clone https://github.com/bearpaw/clothing-co-parsing ../data/clothing-co-parsing
#   git clone https://github.com/Naveen-Dodda/Sample_Pets_dataset ../data/pets
set -e
for folder in ../data/clothing-co-parsing ../data/pets; do
    [ -d "$folder" ] || { echo "$folder is missing: see the top of $0" >&2; exit 2; }
done
# ImageNet MobileNetV2 encoder, fresh prompt encoder and decoder, the labelled mixture.
if [ -f runs/default/last.pt ]; then segany train configs/default.yaml --resume; else segany train configs/default.yaml; fi
cp runs/default/model.safetensors segany/weights/default.safetensors
