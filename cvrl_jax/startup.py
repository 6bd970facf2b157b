"""Process set-up that the entry points (main, demo, compare, export, convert, inspect, bench/) do
before TensorFlow and JAX start.

Importing a library module of cvrl_jax changes nothing in the process; an entry point calls
`quiet_native_logs()` before TensorFlow or JAX is imported or initialised, and
`configure_process()` once, first thing in its main function.
"""
import os
from typing import Sequence

# TensorFlow's and XLA's C++ logging (both tsl): 0 all, 1 drops INFO, 2 drops INFO and WARNING.
QUIET_NATIVE_ENV = {
    'TF_CPP_MIN_LOG_LEVEL': '2',  # "cpu_feature_guard ... optimized to use available CPU ..."
    'GRPC_VERBOSITY': 'ERROR',  # gRPC's start-up lines of multi-host runs
}
# Set at every verbosity: TensorFlow only decodes, crops and resizes frames here, where its
# oneDNN custom ops (matmuls, convolutions) have nothing to do, and it turns them on only on some
# CPUs (AVX-512 BF16 / AMX), printing two lines through absl that TF_CPP_MIN_LOG_LEVEL does not
# silence. Off, the host pipeline runs the same kernels on every x86 CPU.
HOST_TENSORFLOW_ENV = {'TF_ENABLE_ONEDNN_OPTS': '0'}


def verbosity_from_argv(argv: Sequence[str]) -> int:
  """The value of --verbosity=N / --verbosity N / -v N in a command line (0 when absent), read
  before any flag parser runs (TensorFlow prints its start-up lines as it loads)."""
  for i, arg in enumerate(argv):
    for name in ('--verbosity', '-v'):
      value = None
      if arg.startswith(name + '='):
        value = arg[len(name) + 1:]
      elif arg == name and i + 1 < len(argv):
        value = argv[i + 1]
      if value is not None:
        try:
          return int(value)
        except ValueError:
          return 0
  return 0


def quiet_native_logs(verbosity: int = 0) -> None:
  """Silences the INFO and WARNING start-up lines of TensorFlow's, XLA's and gRPC's C++ code
  (and absl's "All log messages before absl::InitializeLog()" that precedes them) unless
  verbosity >= 1, and turns TensorFlow's oneDNN custom ops off at every verbosity
  (HOST_TENSORFLOW_ENV). Must run before TensorFlow or JAX loads; variables the user set win."""
  for name, value in HOST_TENSORFLOW_ENV.items():
    os.environ.setdefault(name, value)
  if verbosity >= 1:
    return
  for name, value in QUIET_NATIVE_ENV.items():
    os.environ.setdefault(name, value)


def configure_process() -> None:
  """The measured-best XLA:CPU flags (`models.conv.apply_cpu_xla_flags`) and TensorFlow, which
  only feeds the input pipeline, kept off the accelerators JAX uses."""
  from cvrl_jax.models import conv  # pylint: disable=g-import-not-at-top
  conv.apply_cpu_xla_flags()
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:  # a JAX-only process (bench/accelerator.py on a bare GPU image)
    return
  tf.config.set_visible_devices([], 'GPU')
  tf.config.set_visible_devices([], 'TPU')
