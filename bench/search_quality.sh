#!/usr/bin/env bash
# Does the search pay? The pre-registered, paired, val-scored comparison of
# docs/benchmarks.md ("Which searcher?"): on the CamVid proxy (tiny net, 96x96, 80 iterations),
# seeds 100-104 one after another, arms random / tpe / ppo-paper / ppo / ppo-asha (24 trials,
# PPO2 + ASHA cut at the same training iterations), each answer re-trained on all of CamVid
# train (300 iterations) with 2 fresh seeds and scored on CamVid val. Writes OUT/seeds/seed-N.json per finished
# seed, then table.md, results.json, paired.png and best_so_far.png. A rerun resumes: the
# searches from OUT/store, the re-trainings from OUT/retrains.jsonl, finished seeds skipped.
# Usage: bash bench/search_quality.sh [CAMVID_DIR] [OUT_DIR] [extra options...]
# A smoke run: bash bench/search_quality.sh ../shared/data/camvid runs/sq-smoke \
#   --seeds 0 --steps 1 --samples 2 --iterations 8 --fresh 1
set -euxo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CAMVID=${1:-../shared/data/camvid}
OUT=${2:-runs/search-quality}
shift 2 || true
time $PY bench/search_quality.py --data-root "$CAMVID" --out "$OUT" \
  --seeds 100,101,102,103,104 --steps 3 --samples 8 --fresh 2 \
  --image-size 96 --iterations 80 --batch-size 8 --retrain-iterations 300 "$@"
