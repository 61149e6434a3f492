#!/usr/bin/env bash
# CPU recipe (laptops, CI): 2 ranks on one machine over gloo, one thread per rank.
#   bash launch/cpu.sh CONFIG.yaml [--section.key value ...]
#   NPROC=4 bash launch/cpu.sh configs/demo_cb_adept.yaml --train.steps 50
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
export DS_ACCELERATOR=cpu OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
exec "$BIN/torchrun" --standalone --nproc_per_node "${NPROC:-2}" -m dpt_dist.cli train "$@"
