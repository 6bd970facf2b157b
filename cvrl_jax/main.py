"""Entry point: `python -m cvrl_jax.main --config=configs/NAME.py --workdir=DIR [--config.key=value]`.

Runs the job named by `config.job` on every process. Multi-host: on Cloud TPU pods and under
Slurm (or Open MPI) jax.distributed is initialised automatically; on plain multi-GPU hosts pass
--coordinator_address=HOST:PORT --num_processes=N --process_id=I on each host, or set them as
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (for launchers that start the same
command everywhere; docs/launching.md).
"""
import importlib
import os
import re
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from cvrl_jax import logs
from cvrl_jax import paths
from cvrl_jax import startup

# config.job -> 'module:function' with signature fn(config, workdir) -> {metric: value}.
# Imported on demand, so a job's dependencies load only when it runs.
JOBS: dict[str, str] = {
    'pretrain': 'cvrl_jax.trainer:pretrain',
    'linear_eval': 'cvrl_jax.evaluate.linear:linear_eval',
    'knn_eval': 'cvrl_jax.evaluate.knn:knn_eval',
    'finetune': 'cvrl_jax.evaluate.finetune:finetune',
    'av_finetune': 'cvrl_jax.evaluate.av_finetune:av_finetune',
}

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A config file in configs/ (optionally FILE:ARG); override values with '
    '--config.KEY=VALUE.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard events, '
                               'config.json and results.json; a run resumes from it.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0, for '
                                   'multi-host runs outside TPU pods and Slurm.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes (hosts).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process index, 0..num_processes-1.')
flags.mark_flags_as_required(['config', 'workdir'])


def _int_from_env(name: str) -> int | None:
  value = os.environ.get(name)
  if not value:
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f'The environment variable {name}={value!r} is not an integer.') from None


def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None) -> None:
  """jax.distributed.initialize with explicit flags, else auto-detected (TPU, Slurm, MPI).

  Flags left unset are read from JAX_NUM_PROCESSES and JAX_PROCESS_ID when those are set (and the
  coordinator then from JAX_COORDINATOR_ADDRESS, which jax itself also reads).
  """
  import jax  # pylint: disable=g-import-not-at-top
  num_processes = num_processes if num_processes is not None else _int_from_env('JAX_NUM_PROCESSES')
  process_id = process_id if process_id is not None else _int_from_env('JAX_PROCESS_ID')
  if coordinator_address or num_processes or process_id is not None:
    coordinator_address = coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS')
    if not coordinator_address or num_processes is None or process_id is None:
      raise ValueError('Multi-host runs need all of --coordinator_address, --num_processes and '
                       '--process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and '
                       'JAX_PROCESS_ID).')
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return
  try:
    jax.distributed.initialize()
  except ValueError:
    pass  # no cluster environment detected: a single process


def get_job(name: str) -> Callable:
  if name not in JOBS:
    raise ValueError(f'config.job={name!r} is not a known job; choose one of {sorted(JOBS)}.')
  module, function = JOBS[name].split(':')
  return getattr(importlib.import_module(module), function)


def _parse_flags(argv: Sequence[str]) -> Sequence[str]:
  """absl flag parsing with one-sentence errors for unknown config keys and missing files."""
  try:
    return flags.FLAGS(argv)
  except (KeyError, AttributeError) as e:  # ml_collections: an override of a key that does not exist
    key = re.search(r"(\w+)", str(e))
    key = key.group(1) if key else str(e)
    overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
    flag = next((f for f in overrides if key in f.split('.')), ' '.join(overrides))
    hint = re.search(r'Did you mean "(\w+)"', str(e))
    hint = f' (did you mean {hint.group(1)!r}?)' if hint else ''
    sys.exit(f'Unknown config key {key!r} in {flag}{hint}; see the config file for valid keys.')
  except flags.Error as e:
    sys.exit(f'Bad command line: {e}')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logs.setup_logging()
  config_file = config_flags.get_config_filename(flags.FLAGS['config']).split(':')[0]
  if not os.path.isfile(config_file):
    sys.exit(f'The config file {config_file} does not exist.')
  config = _CONFIG.value
  if config.job not in JOBS:
    sys.exit(f'config.job={config.job!r} is not a known job; choose one of {sorted(JOBS)}.')

  startup.configure_process()
  try:
    initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  except ValueError as e:  # incomplete or malformed multi-host settings
    sys.exit(f'Error: {e}')

  import jax  # pylint: disable=g-import-not-at-top
  from cvrl_jax import run_utils  # pylint: disable=g-import-not-at-top
  logging.info('JAX %s: process %d of %d, %d local / %d global devices (%s).', jax.__version__,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform)
  from cvrl_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from cvrl_jax import export  # pylint: disable=g-import-not-at-top
  from cvrl_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  job = get_job(config.job)
  workdir = paths.absolute(_WORKDIR.value)
  try:
    with workdir_lib.WorkdirLock(workdir):  # one run per workdir, whatever the job
      job(config, workdir)
  except run_utils.NonFiniteLossError as e:
    sys.exit(str(e))  # exit status 1
  except (ValueError, FileNotFoundError,  # bad config values or data: one sentence
          checkpoint.CheckpointWriteError, export.ExportError,  # a failed write: the same
          OSError) as e:  # any other failed read or write (a full disk at results.json)
    logging.debug('Traceback of the error below:', exc_info=True)  # shown with --verbosity=1
    sys.exit(f'Error: {e}')

if __name__ == '__main__':
  startup.quiet_native_logs(startup.verbosity_from_argv(sys.argv))
  app.run(main, flags_parser=_parse_flags)
