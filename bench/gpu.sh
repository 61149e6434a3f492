#!/usr/bin/env bash
# The GPU measurement in one command, on the lent GPU machine (device tool) or any CUDA machine:
#   make gpu-kit                      # here: the wheels that machine lacks, into .whl/ (<= 64 MiB)
#   bash bench/gpu.sh                 # there (carry .whl): install them, then
#     1. bf16 train + generate smokes through `dpt-dist train`: replicate (ZeRO 0) and ZeRO-3
#     2. training-step and generation throughput and MFU at the T5-3B and a 1B Llama shape
#        (random weights), written to bench/results/gpu_*.json
#   bash bench/gpu.sh --cpu-smoke     # the same steps at toy sizes on CPU, nothing installed (the tests run it)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-bench/results}
RUNS=${RUNS:-runs/gpu}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore::FutureWarning
if [ "${1:-}" = "--cpu-smoke" ]; then
  export DS_ACCELERATOR=cpu OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  tiny=(--tiny --steps 2 --batch 2 --source 16 --target 4 --new-tokens 4)
  smoke_steps=2
else
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install --no-deps --no-index -q .whl/*.whl
  fi
  tiny=()
  smoke_steps=20
fi
for placement in zero0 zero3; do  # 1. the whole training path in bf16, once per placement
  "$PY" -m dpt_dist.cli train configs/demo_cb_adept.yaml --model.dtype bf16 --deepspeed.config "$placement" \
    --train.steps "$smoke_steps" --train.batch_size 8 --train.micro_batch_size 8 --task.max_eval_examples 8 \
    --train.spectrum_every 0 --train.output_dir "$RUNS/smoke-$placement"
  "$PY" - "$RUNS/smoke-$placement/metrics.json" <<'PY'
import json, math, sys
m = json.load(open(sys.argv[1]))
assert m["dtype"] == "bf16" and all(math.isfinite(x) for x in m["train_loss"]), m["train_loss"]
print(f"smoke ok: zero_stage={m['zero_stage']} loss {m['train_loss'][0]:.3f} -> {m['train_loss'][-1]:.3f}, test {m['test']}")
PY
done
# 2. throughput and MFU at real shapes
"$PY" bench/gpu_throughput.py --shape t5-3b --batch 8 --source 256 --target 8 --out "$OUT" "${tiny[@]}"
"$PY" bench/gpu_throughput.py --shape llama-1b --batch 8 --source 325 --target 128 --new-tokens 64 --out "$OUT" "${tiny[@]}"
