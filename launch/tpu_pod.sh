#!/usr/bin/env bash
# Cloud TPU VM pod slice: the same command on every worker (jax.distributed initialises itself).
#
#   launch/tpu_pod.sh setup TPU_NAME ZONE
#       copy this checkout to ~/cvrl_jax on every worker and install it with the TPU runtime;
#   launch/tpu_pod.sh run TPU_NAME ZONE CONFIG WORKDIR [--config.KEY=VALUE ...]
#       start training on every worker in the background (log: ~/cvrl_jax/train.log per worker);
#   launch/tpu_pod.sh log TPU_NAME ZONE      follow worker 0's log;
#   launch/tpu_pod.sh stop TPU_NAME ZONE     SIGTERM every worker: they save a checkpoint and exit.
#
# WORKDIR must be shared by all workers: a gs:// bucket path. After a preemption, `run` with the
# same arguments resumes from WORKDIR/checkpoints. Example:
#   launch/tpu_pod.sh setup my-v4-64 us-central2-b
#   launch/tpu_pod.sh run my-v4-64 us-central2-b configs/cvrl_r3d50_k400.py gs://YOUR_BUCKET/runs/k400
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n '2,15p' "$0"; exit 2
fi
ACTION=$1; TPU_NAME=$2; ZONE=$3; shift 3
REPO=$(cd "$(dirname "$0")/.." && pwd)
ssh_all() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"
}

case "$ACTION" in
  setup)
    tar -C "$REPO" -czf /tmp/cvrl_jax.tgz --exclude=.git --exclude=.venv --exclude=demo_data \
      --exclude='__pycache__' .
    gcloud compute tpus tpu-vm scp /tmp/cvrl_jax.tgz "$TPU_NAME":/tmp/cvrl_jax.tgz \
      --zone="$ZONE" --worker=all
    ssh_all "mkdir -p ~/cvrl_jax && tar -C ~/cvrl_jax -xzf /tmp/cvrl_jax.tgz && \
      cd ~/cvrl_jax && python3 -m pip install -q -e '.[tpu]'"
    ;;
  run)
    if [[ $# -lt 2 ]]; then echo "run needs CONFIG WORKDIR"; exit 2; fi
    CONFIG=$1; WORKDIR=$2; shift 2
    ARGS=$(printf ' %q' "--config=$CONFIG" "--workdir=$WORKDIR" "$@")
    ssh_all "cd ~/cvrl_jax && nohup python3 -m cvrl_jax.main$ARGS > train.log 2>&1 < /dev/null &"
    echo "Started on every worker of $TPU_NAME; follow with: $0 log $TPU_NAME $ZONE"
    ;;
  log)
    gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=0 \
      --command="tail -n 100 -f ~/cvrl_jax/train.log"
    ;;
  stop)
    ssh_all "pkill -TERM -f '^python3 -m cvrl_jax.main' || true"
    ;;
  *)
    echo "Unknown action $ACTION (setup | run | log | stop)"; exit 2
    ;;
esac
