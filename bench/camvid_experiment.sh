#!/usr/bin/env bash
# The reduced-scale CamVid experiment of docs/benchmarks.md ("The paper's comparison on CamVid,
# at CPU scale"; CPU, ~6 min on 2 cores): search an mIoU surrogate on a hold-out of CamVid
# train, retrain with it and with hand-designed losses, evaluate on CamVid val.
# Usage: bash bench/camvid_experiment.sh [CAMVID_DIR] [OUT_DIR]
set -euxo pipefail
cd "$(dirname "$0")/.."
A=${AUTOLOSS:-.venv/bin/autoloss}
CAMVID=${1:-../shared/data/camvid}
OUT=${2:-runs/camvid}
time $A search --metric miou --dataset camvid --data-root $CAMVID --image-size 96 --iterations 80 --batch-size 8 --eval-protocol train_size --steps 3 --samples 4 --store $OUT/store --experiment camvid-miou --export $OUT/camvid-miou.json --report-dir $OUT/report-search -q
time $A retrain --metric miou --dataset camvid --data-root $CAMVID --eval-split val --image-size 96 --iterations 300 --batch-size 8 --eval-protocol native --loss ce --loss lovasz --loss dice --loss preset:miou --loss experiment:camvid-miou --store $OUT/store --experiment camvid-retrain --checkpoint-dir $OUT/ckpt-camvid-miou
# the same checkpoints scored the old way (image and label resized to 96x96), for comparison
for ckpt in $OUT/ckpt-camvid-miou/*.pt; do $A evaluate --checkpoint $ckpt --dataset camvid --data-root $CAMVID --split val --eval-protocol train_size --store $OUT/store --experiment camvid-retrain-train-size; done
