"""Test set-up: 8 fake CPU devices so sharding and collectives are real, TensorFlow kept off accelerators,
and one persistent compilation cache for the session."""
import atexit
import os
import shutil
import signal
import tempfile

# Must happen before JAX is imported anywhere in the test process.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # as the entry points set it (startup.py)
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# Many tests build the same tiny network in a new closure (jax.jit's in-memory cache misses it) and
# many start commands that compile the same train step: with one on-disk cache for this process
# and its subprocesses, each program is compiled once per session. Only programs that took
# 0.5 s or more to compile are written (the small ones cost less to compile than to store).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="cvrl_jax_test_cache_")
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

# A test run started in the background by a non-interactive shell inherits SIGINT and SIGQUIT
# ignored, and so would every command the tests start; the tests that stop a command with Ctrl-C
# (SIGINT) need the default disposition, which an interactive user's commands have. A handler set
# here becomes the default again in every child at exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
  signal.signal(signal.SIGQUIT, signal.SIG_DFL)

from cvrl_jax.models import conv as _conv  # noqa: E402

_conv.apply_cpu_xla_flags()  # what the entry points do (cvrl_jax.startup), before JAX starts

import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_SPEC = os.path.join(os.path.dirname(REPO_ROOT), "shared", "spec")


@pytest.fixture(scope="session")
def repo_root():
  return REPO_ROOT
