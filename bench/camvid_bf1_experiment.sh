#!/usr/bin/env bash
# The reduced-scale CamVid BF1 experiment of docs/benchmarks.md ("The paper's comparison on
# CamVid, at CPU scale"; CPU, ~5 min on 2 cores): search a BF1 surrogate on a hold-out of
# CamVid train, retrain with it, with the paper's BF1 preset and with cross entropy, evaluate
# on CamVid val.
# Usage: bash bench/camvid_bf1_experiment.sh [CAMVID_DIR] [OUT_DIR]
set -euxo pipefail
cd "$(dirname "$0")/.."
A=${AUTOLOSS:-.venv/bin/autoloss}
CAMVID=${1:-../shared/data/camvid}
OUT=${2:-runs/camvid}
time $A search --metric bf1 --dataset camvid --data-root $CAMVID --image-size 96 --iterations 80 --batch-size 8 --eval-protocol train_size --steps 3 --samples 4 --store $OUT/store --experiment camvid-bf1 --export $OUT/camvid-bf1.json --report-dir $OUT/report-bf1 -q
time $A retrain --metric bf1 --dataset camvid --data-root $CAMVID --eval-split val --image-size 96 --iterations 300 --batch-size 8 --eval-protocol native --loss ce --loss preset:bf1 --loss experiment:camvid-bf1 --store $OUT/store --experiment camvid-bf1-retrain --checkpoint-dir $OUT/ckpt-camvid-bf1
# the same checkpoints scored the old way (image and label resized to 96x96), for comparison
for ckpt in $OUT/ckpt-camvid-bf1/*.pt; do $A evaluate --checkpoint $ckpt --dataset camvid --data-root $CAMVID --split val --eval-protocol train_size --store $OUT/store --experiment camvid-bf1-retrain-train-size; done
