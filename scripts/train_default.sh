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
# Each stage resumes where it stopped when run again.
stage() {
    if [ -f "$1/last.pt" ]; then segany train "$2" --resume; else segany train "$2"; fi
}
# 1. ImageNet MobileNetV2 encoder, fresh prompt encoder and decoder, the labelled mixture.
stage runs/default configs/default.yaml
# 2. Grown into mobilenet_v2_hr (the trunk's high-resolution features in the decoder), encoder frozen.
stage runs/default-hr configs/default_high_res.yaml
# 3. The same model at 768 pixels (48 x 48 embedding), the ImageNet trunk frozen.
stage runs/default-768 configs/default_768.yaml
# 4. The same, nothing frozen: the trunk adapts to 768 pixels.
stage runs/default-768-trunk configs/default_768_trunk.yaml
# 5. The same model at 896 pixels (56 x 56 embedding), the trunk frozen again.
stage runs/default-896 configs/default_896.yaml
# 6. Three runs of 350 more steps from the fifth stage (two seeds, copy-paste in two of them), and
#    the bundled model is the average of their weights and the fifth stage's.
stage runs/default-896-more configs/default_896_more.yaml
stage runs/default-896-paste configs/default_896_paste.yaml
stage runs/default-896-paste8 configs/default_896_paste8.yaml
segany average runs/default-896/model.safetensors runs/default-896-more/model.safetensors \
    runs/default-896-paste/model.safetensors runs/default-896-paste8/model.safetensors \
    -o segany/weights/default.safetensors
