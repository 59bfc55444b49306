#!/usr/bin/env bash
# One short run that proves the GPU path on a CUDA machine (issue 17); everything goes to one log.
#
#   bench/gpu_check.sh --prepare DIR        here (with internet or the package cache): put the
#                                           wheels a bare CUDA machine lacks into DIR
#   bench/gpu_check.sh [--wheels DIR] [--log FILE] [--python PY] [--only STAGE,...]
#                                           on the CUDA machine, from the repository root
#                                           (--only: run these stages; env and install always)
#   bench/gpu_check.sh --dry-run [--log FILE]
#                                           every stage on CPU with tiny sizes (CI runs this)
#
# Needs on the CUDA machine: Python >= 3.11 with a CUDA build of torch, torchvision and Triton
# (the project's own code runs from this checkout: PYTHONPATH=repo), numpy, scipy, pandas,
# pyarrow, pillow, matplotlib, pytest; ray 2.60 and the few packages it needs beyond those come
# from --wheels DIR (made by --prepare). Stages (each logged with its wall time, a failure is
# logged and the next stage runs; the exit status is the number of failed stages):
#   env       python, torch, CUDA device, nvidia-smi
#   install   the wheels of DIR into a private site folder (no index, no internet)
#   tests     the CUDA tests (tests that skip without CUDA), not the interpreter tests
#   loss      bench/loss.py --device cuda --eager (N=8 C=21 512x512, Triton and eager rows;
#             goals: region <= 1.5x CE time and <= 2x CE memory, BF1 <= 3x CE time)
#   metrics   bench/metrics.py --device cuda
#   sync      host synchronisations inside the training loop, by torch.cuda.set_sync_debug_mode
#   trial     one paper-recipe proxy trial (deeplabv3_resnet50, 128 px, batch 32, 100
#             iterations), extrapolated to 1000 iterations
#   packed    4 trials at --gpus-per-trial 0.25 on the embedded Ray (one PPO step of 4 samples),
#             the GPU memory used sampled by nvidia-smi
#   overhead  bench/overhead.py: the paper-recipe proxy trial against a bare PyTorch loop
#             (100 iterations, one untimed trial, then the median of 2) with its phases
# Each stage line reads:  "== STAGE <name> <ok|FAILED rc=N|skipped: why> <seconds> s"; the
# last line: "== SUMMARY <k> of <n> stages ok; failed: <names>".
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
DRY=0
WHEELS=""
LOG=""
PREPARE=""

ONLY=""
usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --wheels) WHEELS="${2:?--wheels needs a folder}"; shift ;;
    --log) LOG="${2:?--log needs a file}"; shift ;;
    --python) PY="${2:?--python needs an interpreter}"; shift ;;
    --prepare) PREPARE="${2:?--prepare needs a folder}"; shift ;;
    --only) ONLY=",${2:?--only needs stage names, e.g. sync,overhead},"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# ------------------------------------------------------------------------------ --prepare
if [ -n "$PREPARE" ]; then
  # ray's own wheel (~76 MiB) is repacked as a gzip tarball of its installed tree without the
  # parts a search never imports (Java jars, rllib, serve, llm, the C++ API): ~42 MiB, so that
  # the folder fits through a 64 MiB transfer. The others stay wheels.
  mkdir -p "$PREPARE" || exit 2
  PLAT="--only-binary=:all: --python-version ${GPU_PYTHON_VERSION:-3.12} --implementation cp \
--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64"
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2086
  { "$PY" -m pip download -q --no-deps $PLAT -d "$tmp" "ray==2.60.0" \
    && "$PY" -m pip download -q $PLAT -d "$PREPARE" jsonschema "pydantic>=2.5,<3" \
    && "$PY" -m pip download -q --no-deps $PLAT -d "$PREPARE" tensorboardX; } || exit 1
  # unpack keeping the files' modes (raylet and gcs_server must stay executable)
  mkdir -p "$tmp/site" && "$PY" - "$tmp"/ray-*.whl "$tmp/site" <<'EOF' || exit 1
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for info in z.infolist():
        path = z.extract(info, sys.argv[2])
        mode = (info.external_attr >> 16) & 0o777
        if mode and not info.is_dir():
            os.chmod(path, mode)
EOF
  tar -C "$tmp/site" --exclude=./ray/jars --exclude=./ray/rllib --exclude=./ray/serve \
    --exclude=./ray/llm --exclude=./ray/cpp -cf - . | gzip -6 > "$PREPARE/ray.tar.gz" || exit 1
  rm -rf "$tmp"
  du -sh "$PREPARE"; ls -la "$PREPARE"
  exit 0
fi

[ -n "$LOG" ] || LOG="$REPO/gpu_check.log"
: > "$LOG" || { echo "gpu_check.sh: error: cannot write the log $LOG" >&2; exit 2; }
WORK="$(mktemp -d /tmp/gpucheck.XXXXXX)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export RAY_TMPDIR="$WORK/ray"   # the embedded Ray keeps its files here, not in /tmp/ray
mkdir -p "$RAY_TMPDIR"
cd "$REPO" || exit 2

PASSED=0; TOTAL=0; FAILED=""
stage() {  # stage NAME CMD...: run, log, time (unless --only leaves it out)
  local name="$1"; shift
  local t0 t1 rc
  if [ -n "$ONLY" ] && [ "$name" != env ] && [ "$name" != install ] \
     && [ "${ONLY#*,"$name",}" = "$ONLY" ]; then
    echo "== STAGE $name skipped: not in --only" >> "$LOG"; return 0
  fi
  echo "== BEGIN $name $(date -u +%H:%M:%S)" >> "$LOG"
  t0=$(date +%s.%N)
  "$@" >> "$LOG" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  TOTAL=$((TOTAL + 1))
  local secs; secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  if [ $rc -eq 0 ]; then
    PASSED=$((PASSED + 1)); echo "== STAGE $name ok $secs s" | tee -a "$LOG"
  else
    FAILED="$FAILED $name"; echo "== STAGE $name FAILED rc=$rc $secs s" | tee -a "$LOG"
  fi
}
skip() { echo "== STAGE $1 skipped: $2" | tee -a "$LOG"; }

if [ $DRY -eq 1 ]; then DEV=cpu; else DEV=cuda; fi
echo "== gpu_check.sh $( [ $DRY -eq 1 ] && echo dry-run ) repo $REPO device $DEV log $LOG" | tee -a "$LOG"

# -- env -------------------------------------------------------------------------------------
env_stage() {
  "$PY" - "$DEV" <<'EOF'
import platform, sys
import torch
dev = sys.argv[1]
print("python", platform.python_version(), "torch", torch.__version__, "cuda build",
      torch.version.cuda, "cuda available", torch.cuda.is_available())
if dev == "cuda":
    if not torch.cuda.is_available():
        sys.exit("CUDA is not available to torch here")
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"{p.total_memory / 2**30:.1f} GiB", "bf16",
          torch.cuda.is_bf16_supported())
try:
    import triton
    print("triton", triton.__version__)
except Exception as exc:  # noqa: BLE001
    print("triton missing:", exc)
EOF
  local rc=$?
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  return $rc
}
stage env env_stage

# -- install ---------------------------------------------------------------------------------
install_stage() {
  local site="$WORK/site"
  mkdir -p "$site"
  if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
      "$WHEELS"/*.whl || return 1
  fi
  if [ -f "$WHEELS/ray.tar.gz" ]; then
    tar -C "$site" -xzf "$WHEELS/ray.tar.gz" || return 1
    chmod +x "$site"/ray/core/src/ray/gcs/gcs_server "$site"/ray/core/src/ray/raylet/raylet
  fi
  # ray's console scripts (ray, ...) for the embedded head
  mkdir -p "$site/bin"
  printf '#!/bin/sh\nexec %s -c "import sys; from ray.scripts.scripts import main; sys.exit(main())" "$@"\n' \
    "$PY" > "$site/bin/ray" && chmod +x "$site/bin/ray"
  export PYTHONPATH="$REPO:$site${PYTHONPATH#"$REPO"}"
  export PATH="$site/bin:$PATH"
  "$PY" -c "import ray, autoloss_ray; print('ray', ray.__version__, 'autoloss_ray from', autoloss_ray.__file__)"
}
if [ -n "$WHEELS" ]; then
  stage install install_stage
else
  skip install "no --wheels DIR (using the installed packages)"
fi

# -- tests -----------------------------------------------------------------------------------
# The GPU path's tests: those that skip without CUDA, and the CPU side of the speed options.
# Not the Triton interpreter tests nor the compile-for-sm_90 test: they are CPU checks of the
# same kernels that CI runs, and the interpreter of Triton 3.6 (the CUDA image's) fails on
# numpy >= 2.4 where a kernel loops over a runtime argument ("only 0-dimensional arrays can
# be converted to Python scalars"), before a single CUDA test would run. No -x: one failure
# must not hide the others on a machine lent for minutes.
GPU_TEST_FILES=(tests/losses/test_triton.py tests/trial/test_gpu_speed.py tests/metrics/test_metrics.py
                tests/losses/test_baselines.py tests/trial/test_models_train.py)
GPU_TESTS="(cuda or triton or gpu) and not interpreter and not sm90"
if [ $DRY -eq 1 ]; then
  # the same files and selection collect (imports, markers); the CPU side of the dispatch runs
  stage tests "$PY" -m pytest -q -p no:cacheprovider "${GPU_TEST_FILES[@]}" \
    -k "($GPU_TESTS) and (cuda_float32_only or validation or schedule)"
else
  stage tests "$PY" -m pytest -q -p no:cacheprovider -rs "${GPU_TEST_FILES[@]}" -k "$GPU_TESTS"
fi

# -- loss and metrics benchmarks ----------------------------------------------------------------
if [ $DRY -eq 1 ]; then
  stage loss "$PY" bench/loss.py --device cpu --n 1 --size 32 --repeats 1 --inner 1 \
    --only miou --no-memory
  stage metrics "$PY" bench/metrics.py --device cpu --n 2 --height 48 --width 64 --repeats 1
else
  stage loss "$PY" bench/loss.py --device cuda --n 8 --size 512 --repeats 5 --eager
  stage metrics "$PY" bench/metrics.py --device cuda
fi

# -- host syncs in the training loop ---------------------------------------------------------------
stage sync "$PY" bench/sync_check.py --device "$DEV" $( [ $DRY -eq 1 ] && echo --tiny )

# -- one paper-recipe proxy trial ------------------------------------------------------------------
if [ $DRY -eq 1 ]; then
  stage trial "$PY" bench/trial.py --recipes default --devices cpu --model tiny --image-size 32 \
    --batch-size 4 --iterations 3 --warmup 1 --json "$WORK/trial.json"
else
  stage trial "$PY" bench/trial.py --recipes default --devices cuda --model deeplabv3_resnet50 \
    --image-size 128 --batch-size 32 --iterations 100 --warmup 10 --json "$WORK/trial.json"
fi
[ -f "$WORK/trial.json" ] && { echo "-- trial.json"; cat "$WORK/trial.json"; echo; } >> "$LOG"

# -- 4 packed trials on the embedded Ray -----------------------------------------------------------
packed_stage() {
  local smi=""
  if [ $DRY -eq 0 ] && command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits -lms 500 \
      > "$WORK/smi.csv" 2>/dev/null &
    smi=$!
  fi
  local rc
  if [ $DRY -eq 1 ]; then
    "$PY" -m autoloss_app.cli search --steps 1 --samples 2 --gpus-per-trial 0 --cpus-per-trial 1 \
      --model tiny --iterations 2 --batch-size 2 --image-size 32 --train-size 8 \
      --store "$WORK/store" --experiment gpucheck --tune-dir "$WORK/tune" -q
    rc=$?
  else
    "$PY" -m autoloss_app.cli search --steps 1 --samples 4 --gpus-per-trial 0.25 \
      --cpus-per-trial 2 --model deeplabv3_resnet50 --iterations 100 --batch-size 32 \
      --image-size 128 --train-size 320 --store "$WORK/store" --experiment gpucheck \
      --tune-dir "$WORK/tune" -q
    rc=$?
  fi
  [ -n "$smi" ] && kill "$smi" 2>/dev/null
  [ -f "$WORK/smi.csv" ] && awk -F', ' '{ if ($1 > m) m = $1; if ($2 > u) u = $2 }
    END { print "nvidia-smi peak: memory.used", m, "MiB, utilization", u, "%" }' "$WORK/smi.csv"
  "$PY" - "$WORK/store" <<'EOF'
import sys
from autoloss_ray.store import ExperimentStore
df = ExperimentStore(sys.argv[1]).trials("gpucheck")
cols = [c for c in ("status", "device", "device_name", "node", "iterations", "train_seconds",
                    "eval_seconds", "images_per_second", "reward") if c in df.columns]
print(df[cols].to_string())
ok = df[df["status"] == "ok"]
print(f"packed trials ok: {len(ok)} of {len(df)}; mean train_seconds "
      f"{ok['train_seconds'].mean():.1f}")
sys.exit(0 if len(ok) == len(df) and len(df) > 0 else 1)
EOF
  local prc=$?
  [ $rc -eq 0 ] && [ $prc -eq 0 ]
}
stage packed packed_stage

# -- the trial against a bare PyTorch loop (issue 31) ----------------------------------------------
if [ $DRY -eq 1 ]; then
  stage overhead "$PY" bench/overhead.py --recipes demo --device cpu --iterations 3 --warmup-runs 0
else
  stage overhead "$PY" bench/overhead.py --recipes paper --device cuda --repeats 2 --also-ce
fi

echo "== SUMMARY $PASSED of $TOTAL stages ok; failed:${FAILED:- none}" | tee -a "$LOG"
rm -rf "$WORK"
exit $((TOTAL - PASSED))
