"""Orbax checkpoints of the whole training state plus every host's data position.

A checkpoint at step s holds two items:
  state  the train state after s updates (params, BN statistics, objective aux such as momentum
         encoders and queues, optimiser state, step), saved sharded by every process;
  data   JSON {'positions': [[epoch, records_consumed], ...] one row per process, 'host_split'},
         the input stream position after the s-th batch, so a resumed run reads exactly the
         batches the uninterrupted run would have read next.
"""
from typing import Any, Optional, Sequence

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from cvrl_jax import paths

PyTree = Any
# Orbax splits the write of a replicated array over its replicas ("replica-parallel"). For small
# arrays (BatchNorm vectors, biases, most of a ResNet's kernels) the slicing costs more than it
# saves: on 8 CPU devices it made the first save of a small model take seconds of compilation.
# Arrays whose per-replica slice would be under this size are written by one replica.
MIN_REPLICA_SLICE_BYTES = 1 << 20


def gather_positions(position: Sequence[int]) -> np.ndarray:
  """This process's (epoch, consumed) -> int64 [num_processes, 2] on every process."""
  local = np.asarray(position, np.int64).reshape(2)
  if jax.process_count() == 1:
    return local[None]
  return np.asarray(multihost_utils.process_allgather(local), np.int64).reshape(-1, 2)


def position_for_process(record: dict, process_index: int, process_count: int,
                         host_split: str) -> tuple[int, int]:
  """This process's start position from a checkpoint's data record.

  With the same number of processes every host continues from its own row. With 'records' every
  row is the same global position, so any process count resumes exactly. With 'files' and a new
  process count the file-to-host assignment changes; hosts restart at the start of the earliest
  epoch in progress (exactness for that epoch is lost, which is logged).
  """
  rows = np.asarray(record['positions'], np.int64).reshape(-1, 2)
  if len(rows) == process_count:
    return tuple(int(v) for v in rows[process_index])
  if host_split == 'records' and record.get('host_split') == 'records':
    return tuple(int(v) for v in rows[0])
  epoch = int(rows[:, 0].min())
  logging.warning('The checkpoint was written by %d processes and this run has %d; with '
                  "data.host_split='files' hosts restart at the beginning of epoch %d.",
                  len(rows), process_count, epoch)
  return epoch, 0


_handler_registered = False


def _register_array_handler() -> None:
  """Once per process: the jax.Array handler with MIN_REPLICA_SLICE_BYTES (as Orbax's own
  benchmarks configure replica-parallel saving)."""
  global _handler_registered
  if not _handler_registered:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(
            min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES), override=True)
    _handler_registered = True


class Checkpointer:
  """Periodic (asynchronous) saves to `directory`, keeping the last `keep`; resume from the latest."""

  def __init__(self, directory: str, *, every_steps: int, keep: int, async_save: bool = True):
    _register_array_handler()
    self.directory = paths.absolute(directory)
    self.every_steps = every_steps
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        enable_async_checkpointing=async_save,
        create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=('state', 'data'))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> Sequence[int]:
    return self._manager.all_steps()

  def step_path(self, step: int) -> str:
    return paths.join(self.directory, str(step))

  def is_periodic(self, step: int) -> bool:
    return self.every_steps > 0 and step % self.every_steps == 0

  def save(self, step: int, state: PyTree, position: Sequence[int], host_split: str,
           extra: Optional[dict] = None) -> None:
    """Starts saving (returns before the write ends when asynchronous). Collective: every process
    must call it at the same step. `extra` (JSON values) is stored in the data record too."""
    positions = gather_positions(position)
    record = {**(extra or {}), 'positions': positions.tolist(), 'host_split': host_split}
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(record)), force=True)

  def restore_state(self, step: int, abstract_state: PyTree) -> PyTree:
    """The state at `step`, laid out like `abstract_state` (ShapeDtypeStructs with shardings)."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))
    return restored['state']

  def restore_data(self, step: int) -> dict:
    """The data record at `step`: {'positions': [[epoch, consumed], ...], 'host_split': ...}."""
    return self._manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))['data']

  def wait(self) -> None:
    """Blocks until any asynchronous save has been committed to disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
