"""What every job (pretraining and evaluation) shares about a run: its train state, the stop
signal, progress lines and the JSON files it writes. No job imports another job's module for
these."""
import json
import os
import signal
import threading
from typing import Any, Mapping

from absl import logging
import flax
import jax
import numpy as np
from jax.experimental import multihost_utils

from cvrl_jax import paths

PyTree = Any


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimiser updates done so far
  params: PyTree
  batch_stats: PyTree
  aux: PyTree  # the objective's extra state (momentum encoder, queue, ...)
  opt_state: PyTree


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/Inf loss or parameters; the message names the step and checkpoint."""



class PreemptionWatcher:
  """Reports, at the same step on every process, that the job was asked to stop (SIGTERM, or
  Ctrl-C / SIGINT in a single-process run); the job then saves and exits.

  One process: SIGTERM and the first SIGINT set a flag that the loop reads between steps; after
  the first SIGINT a second one ends the process at once, without saving. Several processes:
  JAX's preemption service (started by jax.distributed.initialize) catches SIGTERM and agrees on
  a step at which every process saves, so the collective save cannot deadlock.
  """

  def __init__(self):
    self._flag = threading.Event()
    self._previous = {}
    self.signal_name = 'SIGTERM'
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)

  def _handle(self, signum, frame) -> None:
    del frame
    if signum == signal.SIGINT:
      signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C ends the process at once
      logging.warning('Interrupted: saving a checkpoint after this step (press Ctrl-C again to '
                      'exit at once without saving).')
    if not self._flag.is_set():
      self.signal_name = signal.Signals(signum).name
    self._flag.set()

  def reached(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self._flag.is_set()
    try:
      return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # the preemption service is disabled
      return False

  def close(self) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def progress_line(step: int, num_steps: int, metrics: Mapping[str, float], steps_per_sec: float,
                  clips_per_step: int) -> str:
  """One readable, grep-friendly line: step, metrics, speed, ETA."""
  parts = [f'step {step}/{num_steps} ({100.0 * step / num_steps:.1f}%)']
  for name, value in metrics.items():
    parts.append(f'{name} {value:.4g}')
  if steps_per_sec > 0:
    parts.append(f'{steps_per_sec:.2f} steps/s')
    parts.append(f'{steps_per_sec * clips_per_step:.1f} clips/s')
    parts.append(f'ETA {format_duration((num_steps - step) / steps_per_sec)}')
  return ' | '.join(parts)


def write_json(path: str, obj: Any) -> None:
  """Process 0 writes `obj` whole (a reader never sees half a file); `path` may be a URL."""
  if jax.process_index() == 0:
    paths.write_json(path, obj)


def allgather_json(obj: Any) -> list:
  """Every process's JSON-serialisable `obj`, in process order, on every process (a collective:
  all processes call it at the same point)."""
  if jax.process_count() == 1:
    return [obj]
  data = np.frombuffer(json.dumps(obj).encode('utf-8'), np.uint8)
  lengths = np.asarray(multihost_utils.process_allgather(np.asarray([data.size], np.int64)))
  lengths = lengths.reshape(-1)
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:data.size] = data
  rows = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(lengths), -1)
  return [json.loads(bytes(row[:n]).decode('utf-8')) for row, n in zip(rows, lengths)]


def pid_alive(pid: int) -> bool:
  """Whether a process with this id runs on this machine (owned by anyone)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True
