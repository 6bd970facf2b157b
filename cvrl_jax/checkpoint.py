"""Orbax checkpoints of the whole training state plus every host's data position.

A checkpoint at step s holds two items:
  state  the train state after s updates (params, BN statistics, objective aux such as momentum
         encoders and queues, optimiser state, step), saved sharded by every process;
  data   JSON {'positions': [[epoch, records_consumed], ...] one row per process, 'host_split'},
         the input stream position after the s-th batch, so a resumed run reads exactly the
         batches the uninterrupted run would have read next.

Which checkpoints stay: the last `keep`, plus every `keep_every_steps`-th step when that is set
(Orbax preservation policies). A failed write (a full disk, a lost bucket) is reported as one
CheckpointWriteError sentence naming the step, at the first step after the write failed; the
previous checkpoint is untouched (Orbax commits a step by renaming its temporary folder, so a
half-written step is never listed). On resume, `restore_latest` checks the newest checkpoint
(both items read, every array finite) and falls back to the previous complete one when it is
not, moving the bad one aside to `<directory>.corrupt/<step>` (nothing is deleted).
"""
import logging as std_logging
from typing import Any, Callable, Optional, Sequence

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
import jax.numpy as jnp

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

  With the same number of processes every host continues from its own row. With 'records' and
  a new process count every host continues from the furthest row: the end of the last global
  batch, which is exact unless hosts had skipped bad records (then the few records a host had
  still to catch up on are left out). With 'files' and a new process count the file-to-host
  assignment changes; hosts restart at the start of the earliest epoch in progress (exactness for
  that epoch is lost, which is logged).
  """
  rows = np.asarray(record['positions'], np.int64).reshape(-1, 2)
  if len(rows) == process_count:
    return tuple(int(v) for v in rows[process_index])
  if host_split == 'records' and record.get('host_split') == 'records':
    return max(tuple(int(v) for v in row) for row in rows)
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


class CheckpointWriteError(OSError):
  """A checkpoint could not be written; the message names the step, the cause and what survived."""


class _OrbaxTracebacks(std_logging.Filter):
  """Drops the tracebacks Orbax logs from its background threads when a write fails (hundreds of
  lines for one full disk); CheckpointWriteError reports the failure in one sentence instead.
  They are kept with --verbosity=1."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if (record.levelno >= std_logging.ERROR and '/orbax/' in record.pathname
        and logging.get_verbosity() < logging.DEBUG):
      return False
    return True


def _install_traceback_filter() -> None:
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _OrbaxTracebacks) for f in handler.filters):
    handler.addFilter(_OrbaxTracebacks())


def preservation_policy(keep: int, keep_every_steps: int = 0):
  """The last `keep` checkpoints, and also every step that is a multiple of `keep_every_steps`
  (> 0) for later evaluation."""
  policies = [ocp.checkpoint_managers.LatestN(n=keep)]
  if keep_every_steps > 0:
    policies.append(ocp.checkpoint_managers.EveryNSteps(interval_steps=keep_every_steps))
  return ocp.checkpoint_managers.AnyPreservationPolicy(policies)


def describe_error(error: BaseException) -> str:
  """The readable reason of a storage error, in a few words (an errno's text where there is one,
  else the first line of the message, without a storage library's internals)."""
  chain, seen = [], set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    chain.append(error)
    error = error.__cause__ or error.__context__
  for e in chain:
    if isinstance(e, OSError) and e.strerror:
      return e.strerror[0].lower() + e.strerror[1:]
  text = ' '.join(str(e) for e in chain)
  for marker, reason in (('RESOURCE_EXHAUSTED', 'no space left on device'),
                         ('No space left', 'no space left on device'),
                         ('PERMISSION_DENIED', 'permission denied'),
                         ('Permission denied', 'permission denied'),
                         ('Read-only file system', 'read-only file system')):
    if marker in text:
      return reason
  first = str(chain[0]).strip().splitlines()
  return first[0][:200] if first else type(chain[0]).__name__


def _all_agree(ok: bool) -> bool:
  """True when `ok` holds on every process (the processes decide on a checkpoint together)."""
  if jax.process_count() == 1:
    return ok
  flags = multihost_utils.process_allgather(np.asarray([ok], np.int32))
  return bool(np.all(flags))


@jax.jit
def _all_finite(tree: PyTree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def non_finite_leaves(tree: PyTree) -> list[str]:
  """Paths of the floating-point arrays of `tree` that hold a NaN or an infinity."""
  if bool(jax.device_get(_all_finite(tree))):
    return []
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return [jax.tree_util.keystr(path) for path, x in flat
          if jnp.issubdtype(x.dtype, jnp.inexact)
          and not bool(jax.device_get(_all_finite(x)))]


class Checkpointer:
  """Periodic (asynchronous) saves to `directory`, keeping the last `keep` (and every
  `keep_every_steps`-th); resume from the latest complete one."""

  def __init__(self, directory: str, *, every_steps: int, keep: int, async_save: bool = True,
               keep_every_steps: int = 0):
    _register_array_handler()
    _install_traceback_filter()
    self.directory = paths.absolute(directory)
    self.every_steps = every_steps
    self._writing: Optional[int] = None  # the step whose asynchronous write may still fail
    self._last_written: Optional[int] = None
    options = ocp.CheckpointManagerOptions(
        preservation_policy=preservation_policy(keep, keep_every_steps),
        enable_async_checkpointing=async_save,
        create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=('state', 'data'))
    self._last_written = self._manager.latest_step()

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
    must call it at the same step. `extra` (JSON values) is stored in the data record too.
    Raises CheckpointWriteError when this write, or the previous asynchronous one, failed."""
    self.wait()  # the previous write's failure is reported as that write's
    positions = gather_positions(position)
    record = {**(extra or {}), 'positions': positions.tolist(), 'host_split': host_split}
    self._writing = step
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(record)), force=True)
    except Exception as e:  # pylint: disable=broad-except
      self._raise_write_error(e)
    if not self._manager.is_saving_in_progress():
      self.poll()

  def poll(self) -> None:
    """Cheap, between steps: raises CheckpointWriteError as soon as an asynchronous write failed
    (instead of one checkpoint interval later)."""
    if self._writing is not None and not self._manager.is_saving_in_progress():
      self.wait()

  def _raise_write_error(self, error: BaseException):
    step, self._writing = self._writing, None
    kept = (f'the previous checkpoint {self.step_path(self._last_written)} is intact'
            if self._last_written is not None else 'there is no earlier checkpoint')
    raise CheckpointWriteError(
        f'Writing the checkpoint of step {step} to {self.step_path(step)} failed '
        f'({describe_error(error)}); {kept}, and the same command resumes from it once the problem '
        f'is fixed.') from error

  def restore_latest(self, abstract_state: PyTree,
                     check_state: Optional[Callable[[PyTree], list[str]]] = None
                     ) -> Optional[tuple[int, PyTree, dict]]:
    """(step, state, data record) of the newest checkpoint that reads completely and holds only
    finite numbers, or None when there is none. A bad checkpoint is moved aside to
    `<directory>.corrupt/<step>` with a warning naming it and the one used instead."""
    check_state = check_state or non_finite_leaves
    bad: list[tuple[int, str]] = []
    result = None
    for step in sorted(self._manager.all_steps(), reverse=True):
      problem = None
      try:
        record = self.restore_data(step)
        np.asarray(record['positions'], np.int64).reshape(-1, 2)
        state = self.restore_state(step, abstract_state)
      except Exception as e:  # pylint: disable=broad-except  (any unreadable file)
        logging.debug('Restoring %s failed:', self.step_path(step), exc_info=True)
        problem = f'it cannot be read ({describe_error(e)})'
      else:
        non_finite = check_state(state)
        if non_finite:
          more = ', ...' if len(non_finite) > 1 else ''
          problem = f'it holds NaN or infinite values ({non_finite[0]}{more})'
      if not _all_agree(problem is None):
        bad.append((step, problem or 'another process could not read it'))
        continue
      result = (step, state, record)
      break
    for step, problem in bad:
      moved = self._move_aside(step)
      instead = (f'resuming from {self.step_path(result[0])}' if result is not None
                 else 'no earlier checkpoint is complete, so the run starts from scratch')
      logging.warning('The checkpoint %s is not usable: %s; %s (it was moved to %s).',
                      self.step_path(step), problem, instead, moved)
    if bad:
      self._manager.reload()
    self._last_written = result[0] if result is not None else None
    return result

  def _move_aside(self, step: int) -> str:
    """Moves step's folder to <directory>.corrupt/<step>[-n] (process 0); returns the new path."""
    target_dir = self.directory + '.corrupt'
    target = paths.join(target_dir, str(step))
    n = 1
    while paths.exists(target):
      n += 1
      target = paths.join(target_dir, f'{step}-{n}')
    if jax.process_index() == 0:
      paths.makedirs(target_dir)
      paths.replace(self.step_path(step), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'cvrl_checkpoint_moved_{step}')
    return target

  def restore_state(self, step: int, abstract_state: PyTree) -> PyTree:
    """The state at `step`, laid out like `abstract_state` (ShapeDtypeStructs with shardings)."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))
    return restored['state']

  def restore_data(self, step: int) -> dict:
    """The data record at `step`: {'positions': [[epoch, consumed], ...], 'host_split': ...}."""
    return self._manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))['data']

  def wait(self) -> None:
    """Blocks until any asynchronous save has been committed to disk; raises
    CheckpointWriteError when it failed."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      if self._writing is None:
        raise
      self._raise_write_error(e)
    if self._writing is not None:
      if self._writing not in self._manager.all_steps():
        self._raise_write_error(RuntimeError('the write did not complete'))
      self._last_written, self._writing = self._writing, None

  def close(self) -> None:
    """Waits for a write in flight and closes; a failure here is logged, not raised (the run's
    own wait() reports it; close() also runs while another error is propagating)."""
    try:
      self._manager.close()
    except Exception as e:  # pylint: disable=broad-except
      if self._writing is None:  # already reported as a CheckpointWriteError
        logging.debug('Closing the checkpoint manager:', exc_info=True)
      else:
        logging.error('The checkpoint write of step %d to %s did not complete (%s).',
                      self._writing, self.step_path(self._writing), describe_error(e))


def has_checkpoints(directory: str) -> bool:
  """Whether `directory` holds any committed checkpoint step (read only; nothing is created)."""
  return paths.isdir(directory) and any(name.isdigit() for name in paths.listdir(directory))
