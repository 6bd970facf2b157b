#!/usr/bin/env bash
# The accelerator benchmark in one command, on a machine with one GPU (or TPU VM):
#
#   bash bench/accelerator.sh            # installs what it needs, prints one table (< 8 minutes)
#   bash bench/accelerator.sh --small    # the same end to end on CPU at tiny shapes
#
# Creates (or reuses) the virtual environment $CVRL_BENCH_VENV (default .venv-accelerator) with
# cvrl_jax and the JAX runtime for the hardware it finds: .[cuda] where nvidia-smi works, .[tpu]
# on a TPU VM, plain CPU JAX otherwise. Extra arguments go to bench/accelerator.py (--help).
# On an image that already has JAX for its accelerator and no network (cvrl_jax's step needs only
# JAX, flax, optax, orbax and ml_collections; TensorFlow only for the host-pipeline line), skip the
# install: CVRL_BENCH_PYTHON=python3 bash bench/accelerator.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${CVRL_BENCH_PYTHON:-}" ]]; then
  exec "$CVRL_BENCH_PYTHON" bench/accelerator.py "$@"
fi
VENV=${CVRL_BENCH_VENV:-.venv-accelerator}
if nvidia-smi -L >/dev/null 2>&1; then
  EXTRA='[cuda]'; echo "GPU: $(nvidia-smi -L | head -n 1)"
elif [[ -e /dev/accel0 || -e /dev/vfio/0 ]]; then
  EXTRA='[tpu]'; echo "TPU VM"
else
  EXTRA=''; echo "No GPU or TPU found: CPU JAX"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
STAMP="$VENV/.cvrl_bench_${EXTRA//[^a-z]/}"
if [[ ! -e "$STAMP" || setup.py -nt "$STAMP" ]]; then
  echo "Installing cvrl_jax$EXTRA into $VENV (a minute or two) ..."
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".$EXTRA"
  touch "$STAMP"
fi
exec "$VENV/bin/python" bench/accelerator.py "$@"
