#!/usr/bin/env bash
# One node, all its GPUs, the DeepSpeed launcher:
#   bash launch/gpu_node.sh CONFIG.yaml [--section.key value ...]
#   NUM_GPUS=4 bash launch/gpu_node.sh configs/my_t5_3b.yaml --model.dtype bf16
set -euo pipefail
exec deepspeed --num_gpus "${NUM_GPUS:-$(nvidia-smi -L | wc -l)}" --module dpt_dist.cli train "$@"
