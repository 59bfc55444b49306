#!/usr/bin/env bash
# The README's reduced-scale CamVid BF1 experiment (CPU, ~5 min on 2 cores): search a BF1
# surrogate on a hold-out of CamVid train, retrain with it, with the paper's BF1 preset and
# with cross entropy, evaluate on CamVid val.
# Usage: bash bench/camvid_bf1_experiment.sh [CAMVID_DIR] [OUT_DIR]
set -euxo pipefail
cd "$(dirname "$0")/.."
A=${AUTOLOSS:-.venv/bin/autoloss}
CAMVID=${1:-../shared/data/camvid}
OUT=${2:-runs/camvid}
time $A search --metric bf1 --dataset camvid --data-root $CAMVID --image-size 96 --iterations 80 --batch-size 8 --steps 3 --samples 4 --store $OUT/store --experiment camvid-bf1 --export $OUT/camvid-bf1.json --report-dir $OUT/report-bf1 -q
time $A retrain --metric bf1 --dataset camvid --data-root $CAMVID --eval-split val --image-size 96 --iterations 300 --batch-size 8 --loss ce --loss preset:bf1 --loss experiment:camvid-bf1 --store $OUT/store --experiment camvid-bf1-retrain --checkpoint-dir $OUT/ckpt
