#!/usr/bin/env bash
# MBPP pass@1 on one multi-GPU node with a real code model (the LoPA / ADePT protocol):
#   bash launch/mbpp_node.sh [PRESET|CONFIG.yaml] [--section.key value ...]
#   bash launch/mbpp_node.sh lora-mbpp-deepseek-coder-1.3b          # the LoRA baseline
#   NUM_GPUS=4 OUT=runs/mbpp-adept bash launch/mbpp_node.sh adept-mbpp-deepseek-coder-1.3b --model.name /models/ds-coder-1.3b
# 1. trains the prompt on task_id 1-487 over all GPUs (placement `auto`: the frozen model replicated
#    when it fits on one GPU, ZeRO-3 otherwise; `dpt-dist plan` shows which), samples one completion per
#    test problem (488-974) on every rank, runs them in the sandbox on rank 0, and logs pass@1
#    (TensorBoard eval/validation/pass@1; metrics.json; per-problem results in predictions/);
# 2. re-scores the written completions standalone with `dpt-dist eval-mbpp` (summary.json).
# The model must be in the local HF cache (HF_HUB_OFFLINE=1) or a local path. Generated code is
# executed: this script passes --allow-code-execution; read README "Executing generated code".
# On CPU (how the test suite exercises it, with the tiny random Llama):
#   LAUNCHER=cpu SPLIT= bash launch/mbpp_node.sh adept-mbpp-deepseek-coder-1.3b --model.name tiny-llama ...
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-adept-mbpp-deepseek-coder-1.3b}
shift || true
OUT=${OUT:-runs/mbpp}
SPLIT=${SPLIT-5050-test}  # empty: score whatever problems the completions name
BIN=${VENV:-.venv}/bin
if [ "${LAUNCHER:-deepspeed}" = cpu ]; then
  export DS_ACCELERATOR=cpu OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
  launcher=("$BIN/torchrun" --standalone --nproc_per_node "${NPROC:-2}")
else
  launcher=("$BIN/deepspeed" --num_gpus "${NUM_GPUS:-$(nvidia-smi -L | wc -l)}")
fi
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
"${launcher[@]}" -m dpt_dist.cli train "$CONFIG" --task.data_dir "${MBPP_DIR:-data/mbpp}" \
  --train.output_dir "$OUT" --allow-code-execution "$@"
completions=$(ls -t "$OUT"/predictions/validation_step*.completions.jsonl | head -1)
"$BIN/python" -m dpt_dist.cli eval-mbpp --completions "$completions" --allow-code-execution \
  --data "${MBPP_DIR:-data/mbpp}/mbpp.jsonl" ${SPLIT:+--split "$SPLIT"} --out "$OUT/eval-mbpp"
