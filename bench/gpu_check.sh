#!/usr/bin/env bash
# GPU check: train a random BERT-base-sized model through the real CLI and job manager
# (`python -m core train CONFIG.yaml`) on a GPU while sampling nvidia-smi once a second; then print
# the run's status, its metrics from the run store and the GPU utilisation. Meant to finish in under
# 5 minutes on one H200. Exit status: 0 when the run completed, 1 when it did not, 2 when set-up failed.
#
#   bash bench/gpu_check.sh                                   # on the GPU machine
#   DEVICE=cpu MAX_STEPS=5 SIZE=tiny bash bench/gpu_check.sh  # smoke test of everything but CUDA
#   bash bench/gpu_check.sh --pack DIR                        # (here) write DIR/cache for SEED_CACHE
#
# Settings, from the environment:
#   DEVICE      cuda | cpu                        (cuda)
#   PRECISION   auto | fp32 | bf16 | fp16         (bf16 on cuda, fp32 on cpu)
#   SIZE        tiny | small | base               (base: 12 layers, hidden 768)
#   DATASET     full-length | planted-keywords | movie-reviews
#               (full-length, the default: generated here, every row fills MAX_LENGTH tokens, so tokens per step are
#               known exactly and MFU is honest; planted-keywords: generated in code, short rows)
#   DEVICES     processes (GPUs) for the run: 1, or 0 for every visible GPU (1)
#   PEAK_TFLOPS the GPU's dense bf16 peak for MFU (default from its name: H100/H200 989, A100 312, L40S 362, L4 121)
#   MAX_STEPS=300  BATCH=32  MAX_LENGTH=128  EVAL_STEPS=100  TRAIN_TIMEOUT=210 (seconds)
#   THROUGHPUT  1: afterwards, bench/train_throughput.py on the same device if time is left (1 on cuda, 0 on cpu)
#   PYTHON      interpreter (python3 if it imports torch, else python)
#   SEED_CACHE  a workspace cache/ folder copied in first: prepared assets for a machine that cannot download them
#               (default .gpu-carry/cache if present; make it with --pack .gpu-carry)
#   WHEELS      a folder of wheels installed with pip --no-index into WORKDIR/site (default .whl if present)
#   WORKDIR     where the workspace, model, config and samples go (a new temporary folder)
set -uo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT" || exit 2

if [ -z "${PYTHON:-}" ]; then
    if command -v python3 >/dev/null && python3 -c "import torch" 2>/dev/null; then PYTHON=python3; else PYTHON=python; fi
fi
PY="$PYTHON"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

if [ "${1:-}" = "--pack" ]; then
    # Prepared assets for an offline GPU machine: the MiniLM tokenizer and config (its weights are
    # not needed for a random model, and are too big to carry) and, if present, the movie-review data.
    target="${2:?usage: bash bench/gpu_check.sh --pack DIR}"
    mkdir -p "$target" || exit 2
    "$PY" - "$target" <<'EOF' || exit 2
import shutil, sys
from pathlib import Path
from core.catalog import MINILM_L6
from core.assets import asset_dir
from core.data.builtin import BUILTIN_DATASETS

cache = Path(sys.argv[1]) / "cache" / "assets"
source = MINILM_L6.local_dir().parent
shutil.rmtree(cache / source.name, ignore_errors=True)
shutil.copytree(source, cache / source.name, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx", "onnx", "openvino"))
print(f"packed {source.name} (tokenizer and config, no weights)")
movie = BUILTIN_DATASETS["movie-reviews"]
asset = getattr(movie, "asset", None)
if asset is not None:
    try:
        movie.frame()
        shutil.rmtree(cache / asset.name, ignore_errors=True)
        shutil.copytree(asset_dir(asset), cache / asset.name)
        print(f"packed {asset.name}")
    except Exception as problem:  # the dataset is optional: planted-keywords needs nothing
        print(f"movie-reviews not packed ({problem})")
EOF
    du -sh "$target/cache"
    echo "carry $target and run with SEED_CACHE=$target/cache"
    exit 0
fi

DEVICE="${DEVICE:-cuda}"
if [ "$DEVICE" = "cuda" ]; then PRECISION="${PRECISION:-bf16}"; THROUGHPUT="${THROUGHPUT:-1}"; else PRECISION="${PRECISION:-fp32}"; THROUGHPUT="${THROUGHPUT:-0}"; fi
SIZE="${SIZE:-base}"
DATASET="${DATASET:-full-length}"
DEVICES="${DEVICES:-1}"
MAX_STEPS="${MAX_STEPS:-300}"
BATCH="${BATCH:-32}"
MAX_LENGTH="${MAX_LENGTH:-128}"
EVAL_STEPS="${EVAL_STEPS:-100}"
TRAIN_TIMEOUT="${TRAIN_TIMEOUT:-210}"
WORK="${WORKDIR:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")}"
mkdir -p "$WORK" || exit 2
WORK="$(cd "$WORK" && pwd)"
export WORKBENCH_WORKSPACE="$WORK/workspace"
START=$SECONDS
say() { printf '[gpu-check %3ds] %s\n' "$((SECONDS - START))" "$*"; }

# --- packages -------------------------------------------------------------------------------
WHEELS="${WHEELS:-}"
if [ -z "$WHEELS" ] && [ -d .whl ]; then WHEELS=.whl; fi
if [ -n "$WHEELS" ]; then
    say "installing the wheels in $WHEELS into $WORK/site (no index)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$WHEELS"/*.whl || exit 2
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c "import transformers" 2>/dev/null; then
    say "transformers is missing: pip install -r requirements.txt"
    requirements=requirements.txt
    if "$PY" -c "import torch" 2>/dev/null; then
        # Keep the torch that is there (a CUDA build); the pinned line names the CPU wheel we use here.
        requirements="$WORK/requirements-no-torch.txt"
        grep -v -E '^torch([=<>!~ ]|$)' requirements.txt >"$requirements"
    fi
    "$PY" -m pip install -q -r "$requirements" || { say "pip install failed (no network? carry wheels: see bench/README.md)"; exit 2; }
fi
"$PY" - <<'EOF' || exit 2
import importlib, sys
missing = []
for module in ("torch", "transformers", "datasets", "yaml", "psutil", "pandas", "pyarrow", "sklearn", "safetensors", "tensorboard"):
    try:
        importlib.import_module(module)
    except ImportError as problem:
        missing.append(f"{module} ({problem})")
import torch, transformers
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (cuda {torch.version.cuda}, available {torch.cuda.is_available()}), transformers {transformers.__version__}")
if transformers.__version__ != "5.24.0":
    print(f"note: requirements.txt pins transformers 5.24.0; this is {transformers.__version__}")
if missing:
    print("missing modules: " + ", ".join(missing) + " -- carry them as wheels (WHEELS=...; see bench/README.md)")
    sys.exit(1)
EOF

HAVE_SMI=0
if command -v nvidia-smi >/dev/null; then
    HAVE_SMI=1
    nvidia-smi -L
elif [ "$DEVICE" = "cuda" ]; then
    say "warning: nvidia-smi not found, no utilisation samples"
fi

# --- model, data, config ----------------------------------------------------------------------
mkdir -p "$WORKBENCH_WORKSPACE"
if [ -z "${SEED_CACHE:-}" ] && [ -d .gpu-carry/cache ]; then SEED_CACHE=.gpu-carry/cache; fi
if [ -n "${SEED_CACHE:-}" ]; then
    say "seeding the workspace cache from $SEED_CACHE"
    mkdir -p "$WORKBENCH_WORKSPACE/cache" && cp -r "$SEED_CACHE"/. "$WORKBENCH_WORKSPACE/cache/" || exit 2
fi
MODEL_DIR="$WORK/random-bert-$SIZE"
say "writing a random BERT ($SIZE) to $MODEL_DIR"
"$PY" -c "
import sys
from pathlib import Path
from core.scratch_models import write_random_bert
write_random_bert(Path(sys.argv[1]), sys.argv[2])
" "$MODEL_DIR" "$SIZE" || { say "could not write the model"; exit 2; }

if [ "$DATASET" = "full-length" ]; then
    # Rows of 400 words are cut to MAX_LENGTH tokens: every training row is full, as a seq-128 benchmark means.
    DATASET="$WORK/full-length.csv"
    "$PY" -c "
import csv, random, sys
rng = random.Random(0)
words = 'the film story cast scene plot music actor script light camera ending moment voice world time'.split()
with open(sys.argv[1], 'w', newline='') as handle:
    out = csv.writer(handle)
    out.writerow(['text', 'label'])
    for index in range(4000):
        label = ('positive', 'negative')[index % 2]
        text = ' '.join(rng.choice(words) for _ in range(400))
        out.writerow([('superb ' if label == 'positive' else 'dull ') + text, label])
" "$DATASET" || { say "could not write the full-length rows"; exit 2; }
fi

CONFIG="$WORK/gpu-check.yaml"
cat >"$CONFIG" <<EOF
name: gpu check (random BERT-$SIZE, $DATASET)
task: text_classification
model: $MODEL_DIR
dataset: $DATASET
learning_rate: 5.0e-5
batch_size: $BATCH
max_steps: $MAX_STEPS
max_length: $MAX_LENGTH
eval_steps: $EVAL_STEPS
logging_steps: 10
device: $DEVICE
devices: $DEVICES
precision: $PRECISION
EOF
say "config $CONFIG:"
sed 's/^/    /' "$CONFIG"

# --- train, sampling the GPU -------------------------------------------------------------------
SAMPLES="$WORK/gpu-samples.csv"
: >"$SAMPLES"
SAMPLER=""
if [ "$HAVE_SMI" = 1 ]; then
    (
        while :; do
            line="$(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null | head -n 1)"
            [ -n "$line" ] && printf '%s, %s\n' "$(date +%s.%N)" "$line"
            sleep 1
        done
    ) >>"$SAMPLES" &
    SAMPLER=$!
fi
stop_sampler() { if [ -n "$SAMPLER" ]; then kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null; SAMPLER=""; fi; }
trap stop_sampler EXIT

say "python -m core train (timeout ${TRAIN_TIMEOUT}s)"
timeout "$TRAIN_TIMEOUT" "$PY" -m core train "$CONFIG" 2>&1 | tee "$WORK/train.out"
TRAIN_RC=${PIPESTATUS[0]}
RUN_ID="$(sed -n 's/^queued run \([^ ]*\) .*/\1/p' "$WORK/train.out" | head -n 1)"
if [ "$TRAIN_RC" = 124 ] && [ -n "$RUN_ID" ]; then
    say "the run outlasted ${TRAIN_TIMEOUT}s: cancelling it"
    "$PY" -m core cancel "$RUN_ID"
    sleep 5
fi
stop_sampler
say "train command exit status $TRAIN_RC"

# --- report ------------------------------------------------------------------------------------
echo
"$PY" -m core runs
echo
"$PY" - "$RUN_ID" "$SAMPLES" "$MAX_LENGTH" "${PEAK_TFLOPS:-}" <<'EOF'
import json
import sys
from core.store import RunStore

run_id, samples_path, max_length, peak_given = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = RunStore()
run = store.get(run_id) if run_id else None
if run is None:
    print("no run was queued (see the output above)")
    sys.exit(1)
print(f"run {run.id}: {run.status} on {run.device}, step {run.step}/{run.max_steps}" + (f" -- {run.error}" if run.error else ""))
metrics = store.metrics(run.id)

def last(name):
    rows = metrics[metrics["name"] == name].sort_values(["step", "recorded_at"])
    return (int(rows["step"].iloc[-1]), float(rows["value"].iloc[-1])) if len(rows) else (None, None)

for name in ("eval_accuracy", "eval_loss", "test_accuracy", "train_loss", "train_loss_mean", "train_samples_per_second", "train_runtime"):
    step, value = last(name)
    if value is None and name not in ("eval_accuracy", "train_samples_per_second"):
        continue
    print(f"  {name:26} {'-' if value is None else f'{value:.4g}'}" + ("" if step is None else f"  (step {step})"))
summary = json.loads((run.directory / "summary.json").read_text()) if (run.directory / "summary.json").exists() else {}
print("  summary                    " + ", ".join(f"{key} {summary.get(key)}" for key in ("precision", "attention", "tf32", "optimizer", "allocator", "processes", "global_batch")))
_, per_second = last("train_samples_per_second")
if per_second and summary.get("total_parameters"):
    # Training costs about 6 FLOPs per parameter per token (forward 2, backward 4); every row is max_length tokens
    # when the data is the full-length set (otherwise this is an upper bound on the tokens, and on the MFU).
    achieved = 6 * summary["total_parameters"] * per_second * max_length
    peaks = {"H200": 989, "H100": 989, "A100": 312, "L40S": 362, "L4": 121, "A10": 125}
    import torch

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    peak = float(peak_given) if peak_given else next((value for key, value in peaks.items() if key in name), None)
    processes = int(summary.get("processes") or 1)
    line = f"  throughput                 {per_second:.1f} samples/s, {per_second * max_length:,.0f} tokens/s, {achieved / 1e12:.2f} TFLOP/s"
    if peak:
        line += f"; MFU {achieved / (peak * 1e12 * processes):.1%} of {processes} x {peak:g} TFLOP/s ({name})"
    print(line)
first_eval = metrics[metrics["name"] == "eval_accuracy"].sort_values("step")
if len(first_eval) > 1:
    print(f"  eval_accuracy by step      " + ", ".join(f"{int(s)}: {v:.3f}" for s, v in zip(first_eval["step"], first_eval["value"])))

samples = []
for line in open(samples_path, encoding="utf-8"):
    parts = [part.strip() for part in line.split(",")]
    try:
        samples.append((float(parts[0]), float(parts[1].split()[0]), float(parts[2].split()[0])))
    except (IndexError, ValueError):
        pass
if not samples:
    print("GPU utilisation: no samples (no nvidia-smi, or it answered nothing)")
else:
    def summary(rows, label):
        if not rows:
            print(f"GPU utilisation {label}: no samples")
            return
        util = [u for _, u, _ in rows]
        memory = [m for _, _, m in rows]
        print(f"GPU utilisation {label}: mean {sum(util) / len(util):.0f}%, max {max(util):.0f}% over {len(rows)} samples;"
              f" memory used max {max(memory):.0f} MiB")
    summary(samples, "whole command")
    if run.train_started_at and run.progress_at:
        window = [row for row in samples if run.train_started_at <= row[0] <= run.progress_at]
        summary(window, f"during the training steps ({run.progress_at - run.train_started_at:.0f} s)")
sys.exit(0 if run.status == "completed" else 1)
EOF
STATUS=$?

if [ "$STATUS" = 0 ] && [ "$THROUGHPUT" = 1 ]; then
    left=$((280 - (SECONDS - START)))
    if [ "$left" -ge 90 ]; then
        say "bench/train_throughput.py on $DEVICE ($left s left of the 5-minute budget)"
        timeout "$left" "$PY" bench/train_throughput.py --device "$DEVICE" --model-size "$SIZE" --dataset "$DATASET" \
            --batch-size "$BATCH" --max-length "$MAX_LENGTH" --steps "${THROUGHPUT_STEPS:-60}" --precision "$PRECISION" \
            2>&1 | grep -v -E "Warning|LOAD REPORT|MISSING|^Key |^-+\+|^Notes:|^$|it/s\]|examples/s\]" \
            || say "train_throughput.py did not finish (not counted against this check)"
    else
        say "skipping train_throughput.py: only $left s left of the 5-minute budget"
    fi
fi
say "done in $((SECONDS - START)) s; files in $WORK"
exit "$STATUS"
