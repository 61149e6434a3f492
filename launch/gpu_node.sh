#!/usr/bin/env bash
# One node, all its GPUs, the DeepSpeed launcher:
#   bash launch/gpu_node.sh CONFIG.yaml [--section.key value ...]
#   NUM_GPUS=4 bash launch/gpu_node.sh configs/my_t5_3b.yaml --model.dtype bf16 --resume
# (On CPU, e.g. in the tests: DS_ACCELERATOR=cpu NUM_GPUS=2 runs 2 CPU ranks.)
set -euo pipefail
cd "$(dirname "$0")/.."
DEEPSPEED=${DEEPSPEED:-$(command -v deepspeed || echo "${VENV:-.venv}/bin/deepspeed")}
NUM_GPUS=${NUM_GPUS:-$(nvidia-smi -L | wc -l)}
exec "$DEEPSPEED" --num_gpus "$NUM_GPUS" --master_port "${MASTER_PORT:-29500}" --module dpt_dist.cli train "$@"
