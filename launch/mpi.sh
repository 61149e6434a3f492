#!/usr/bin/env bash
# MPI: mpirun starts the ranks, dpt_dist discovers rank / world size / master through mpi4py.
#   NP=16 HOSTFILE=hosts bash launch/mpi.sh CONFIG.yaml [--section.key value ...]
#   NP=2 bash launch/mpi.sh configs/demo_cb_adept.yaml          # one machine (CPU works too)
# MPI_ARGS passes launcher flags through, e.g. Open MPI: MPI_ARGS="-x NCCL_SOCKET_IFNAME -x HF_HUB_OFFLINE"
# (MPICH forwards the environment by default).
set -euo pipefail
cd "$(dirname "$0")/.."
MPIRUN=${MPIRUN:-$(command -v mpirun || echo "${VENV:-.venv}/bin/mpirun")}
PYTHON=${PYTHON:-$(command -v python || echo "${VENV:-.venv}/bin/python")}
hosts=()
[ -n "${HOSTFILE:-}" ] && hosts=(-f "$HOSTFILE")
# shellcheck disable=SC2086
exec "$MPIRUN" -n "${NP:-2}" "${hosts[@]}" ${MPI_ARGS:-} "$PYTHON" -m dpt_dist.cli train "$@"
