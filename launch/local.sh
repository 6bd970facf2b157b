#!/usr/bin/env bash
# One host, every local device (CPU, GPUs or a single TPU VM):
#   launch/local.sh CONFIG WORKDIR [--config.KEY=VALUE ...]
# e.g.
#   launch/local.sh configs/demo.py /tmp/cvrl_demo
#   launch/local.sh configs/cvrl_r3d50_k400.py /data/runs/k400 --config.batch_size=256
# Running the same command again resumes from WORKDIR/checkpoints. PYTHON picks the interpreter.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  sed -n '2,8p' "$0"; exit 2
fi
CONFIG=$1; WORKDIR=$2; shift 2
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m cvrl_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
