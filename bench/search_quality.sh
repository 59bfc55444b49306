#!/usr/bin/env bash
# Does the search pay? PPO2, random search, TPE and CMA-ES on the README's CamVid proxy
# (tiny net, 96x96, 80 iterations, hold-out mIoU), 48 trials each (T=6 x M=8), 3 seeds,
# from the same start; each recommendation re-trained with 2 fresh seeds; reward noise of
# the start theta over 3 seeds. Writes table.md, results.json and best_so_far.png to OUT.
# A rerun resumes / skips the searches already in OUT/store.
# Usage: bash bench/search_quality.sh [CAMVID_DIR] [OUT_DIR] [extra options...]
# A smoke run: bash bench/search_quality.sh ../shared/data/camvid runs/sq-smoke \
#   --searchers ppo,tpe --seeds 2 --steps 2 --samples 2 --iterations 10 --fresh 1 --noise-seeds 2
set -euxo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CAMVID=${1:-../shared/data/camvid}
OUT=${2:-runs/search-quality}
shift 2 || true
time $PY bench/search_quality.py --data-root "$CAMVID" --out "$OUT" \
  --searchers ppo,random,tpe,cmaes --seeds 3 --steps 6 --samples 8 \
  --checkpoints 8,16,32,48 --fresh 2 --noise-seeds 3 \
  --image-size 96 --iterations 80 --batch-size 8 "$@"
