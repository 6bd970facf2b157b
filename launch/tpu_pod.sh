#!/usr/bin/env bash
# Cloud TPU VM pod slice: the same command on every worker (jax.distributed initialises itself).
#
#   launch/tpu_pod.sh setup TPU_NAME ZONE
#       copy this checkout to ~/cvrl_jax on every worker and pip install it with the TPU runtime;
#   launch/tpu_pod.sh run TPU_NAME ZONE CONFIG WORKDIR [--config.KEY=VALUE ...]
#       start training on every worker in the background (log: ~/cvrl_jax/train.log per worker);
#   launch/tpu_pod.sh log TPU_NAME ZONE      follow worker 0's log (Ctrl-C stops following only);
#   launch/tpu_pod.sh stop TPU_NAME ZONE     SIGTERM every worker and wait until each has saved a
#                                            checkpoint and exited.
#
# WORKDIR must be shared by all workers: a gs:// bucket path. After a stop or a preemption, `run`
# with the same arguments resumes from WORKDIR/checkpoints. Example:
#   launch/tpu_pod.sh setup my-v4-64 us-central2-b
#   launch/tpu_pod.sh run my-v4-64 us-central2-b configs/cvrl_r3d50_k400.py gs://YOUR_BUCKET/runs/k400
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n '2,15p' "$0"; exit 2
fi
ACTION=$1; TPU_NAME=$2; ZONE=$3; shift 3
REPO=$(cd "$(dirname "$0")/.." && pwd)
# What `run` starts and `stop` signals: on the workers, python3 is the interpreter `setup` installed
# into, and the pattern is anchored so that it matches neither the shell running it nor a log tail.
TRAINER='^python3 -m cvrl_jax.main'
ssh_all() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"
}

case "$ACTION" in
  setup)
    LOCAL_TMP=$(mktemp -d)
    trap 'rm -rf "$LOCAL_TMP"' EXIT
    TARBALL=$LOCAL_TMP/cvrl_jax.tgz
    tar -C "$REPO" -czf "$TARBALL" --exclude=.git --exclude=.venv --exclude=demo_data \
      --exclude='__pycache__' --exclude='*.egg-info' .
    gcloud compute tpus tpu-vm scp "$TARBALL" "$TPU_NAME":cvrl_jax.tgz --zone="$ZONE" --worker=all
    ssh_all "mkdir -p ~/cvrl_jax && tar -C ~/cvrl_jax -xzf ~/cvrl_jax.tgz && rm ~/cvrl_jax.tgz && \
cd ~/cvrl_jax && python3 -m pip install -q -e '.[tpu]'"
    ;;
  run)
    if [[ $# -lt 2 ]]; then echo "run needs CONFIG WORKDIR"; exit 2; fi
    CONFIG=$1; WORKDIR=$2; shift 2
    ARGS=$(printf ' %q' "--config=$CONFIG" "--workdir=$WORKDIR" "$@")
    # One run per pod: a second would fight the first for the TPU chips. The log is appended to, so
    # a resumed run follows the stopped one, and each run ends with its exit status. The background
    # job has all its output redirected, or ssh would wait for it.
    ssh_all "if pgrep -f '$TRAINER' > /dev/null; then \
echo \"\$(hostname): cvrl_jax.main is already running; stop it first\" >&2; exit 1; fi; \
cd ~/cvrl_jax || exit 1; (nohup python3 -m cvrl_jax.main$ARGS; \
echo \"cvrl_jax.main exited with status \$?\") >> train.log 2>&1 < /dev/null &"
    echo "Started on every worker of $TPU_NAME; follow with: $0 log $TPU_NAME $ZONE"
    ;;
  log)
    gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=0 \
      --command="tail -n 100 -f ~/cvrl_jax/train.log"
    ;;
  stop)
    # SIGTERM: each worker finishes its step, all save the same step, and they exit 0. Saving a
    # large state to a bucket takes a while; wait for it, so that a `run` right after resumes.
    ssh_all "pkill -TERM -f '$TRAINER' || exit 0; \
while pgrep -f '$TRAINER' > /dev/null; do sleep 1; done"
    ;;
  *)
    echo "Unknown action $ACTION (setup | run | log | stop)"; exit 2
    ;;
esac
