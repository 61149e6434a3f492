#!/usr/bin/env bash
# Several nodes with the DeepSpeed launcher (pdsh over ssh; passwordless ssh between nodes):
#   HOSTFILE=hosts bash launch/multinode.sh CONFIG.yaml [--section.key value ...]
# hosts has one line per node:   node01 slots=8
#                                node02 slots=8
# The launcher runs on the first node; the rendezvous address is that node (MASTER_ADDR).
# Environment for every rank goes through .deepspeed_env (DeepSpeed copies it to all nodes):
# the NCCL_*, HF_* and DS_* variables set here, plus PYTHONPATH, are written to it.
# For multi-node ZeRO-3 add --deepspeed.config zero3_pp (ZeRO++: hpZ keeps a
# copy of the frozen weights' partitions inside each node, quantized all-gathers across nodes).
# DRY_RUN=1 prints .deepspeed_env and the command instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTFILE=${HOSTFILE:?set HOSTFILE to a DeepSpeed hostfile (one line per node: NAME slots=GPUS)}
[ -f "$HOSTFILE" ] || { echo "launch/multinode.sh: HOSTFILE $HOSTFILE does not exist" >&2; exit 2; }
DEEPSPEED=${DEEPSPEED:-$(command -v deepspeed || echo "${VENV:-.venv}/bin/deepspeed")}
MASTER_ADDR=${MASTER_ADDR:-$(awk 'NF && $1 !~ /^#/ {print $1; exit}' "$HOSTFILE")}
env_file=$(mktemp)
env | grep -E '^(NCCL_|HF_|DS_|TORCH_|CUDA_|PYTHONPATH=|OMP_NUM_THREADS=)' | sort > "$env_file" || true
cmd=("$DEEPSPEED" --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "${MASTER_PORT:-29500}"
     --module dpt_dist.cli train "$@")
if [ "${DRY_RUN:-0}" = 1 ]; then
  echo "# .deepspeed_env"; cat "$env_file"; rm -f "$env_file"
  echo "# command"; printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
mv "$env_file" .deepspeed_env
exec "${cmd[@]}"
