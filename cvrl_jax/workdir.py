"""What a run promises about its workdir: one writer at a time, and a resume with the config it
started with (docs/resuming.md).

  WorkdirLock      WORKDIR/lock.json (host, pid, start time) held with an OS file lock for the
                   whole run: a second run on the same workdir stops with one sentence naming the
                   first; a run that crashed or was killed leaves no stuck lock (the OS drops the
                   file lock with the process; the next run takes the workdir over and says so).
  check_resume     compares the config of a resumed run with WORKDIR/config.json before anything
                   is written: keys outside RESUMABLE_KEYS that differ stop the run, named.
  finished_results results.json of a run that has already finished, which a re-run keeps.
"""
import datetime
import errno
import fcntl
import json
import os
import socket
import threading
import time
from typing import Any, Mapping, Optional, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from cvrl_jax import paths
from cvrl_jax import run_utils

LOCK_FILE = 'lock.json'
# Storage without file locks: the holder touches lock.json every HEARTBEAT_S seconds, and a lock
# of another host untouched for STALE_AFTER_S is taken over.
HEARTBEAT_S = 60
STALE_AFTER_S = 600
CONFIG_FILE = 'config.json'
RESULTS_FILE = 'results.json'

# Config keys that a resumed pretraining run may change (docs/resuming.md). A key ending in '.'
# is a prefix: every key under it. Every other key (model, objective, optimiser, seed, batch,
# data shape and order) must equal the workdir's config.json, or the resumed run would not
# continue the run that wrote the checkpoints.
RESUMABLE_KEYS: tuple[str, ...] = (
    'num_train_steps', 'num_epochs',  # the run's length (the schedule follows the new length)
    'log_every_steps', 'profile', 'knn_every_steps',
    'checkpoint.',  # every_steps, keep, keep_every_steps, async_save
    'mesh.',  # the state is resharded onto the new mesh when it is restored
    'model.remat', 'model.conv_impl',  # how the same network is computed
    'data.train_files', 'data.tfds_data_dir',  # the same videos at another location
    'data.num_parallel_calls', 'data.prefetch',  # input throughput
    'data.max_bad_fraction',  # how many undecodable records to skip (cvrl_jax/data/records.py)
    'eval.', 'data.eval_files', 'data.tfds_eval_split', 'data.num_classes',  # the online monitor
    'data.eval_num_frames', 'data.eval_frame_stride', 'data.eval_image_size', 'data.eval_resize',
    'data.eval_crop_size', 'data.eval_num_temporal_views', 'data.eval_num_spatial_views',
)
# The same for evaluation jobs (linear_eval, knn_eval, finetune): their length, logging,
# checkpoints, mesh and data locations may change; the encoder, the classifier's training and
# the test protocol may not.
EVAL_RESUMABLE_KEYS: tuple[str, ...] = (
    'log_every_steps', 'profile', 'knn_every_steps', 'checkpoint.', 'mesh.',
    'model.remat', 'model.conv_impl', 'eval.batch_size',
    'data.train_files', 'data.eval_files', 'data.tfds_data_dir',
    'data.num_parallel_calls', 'data.prefetch',
)
# Written by the run itself (counted from the files); compared separately, after counting.
DERIVED_KEYS = ('data.num_train_examples',)


# ------------------------------------------------------------------------------------------------
# Config on resume.
# ------------------------------------------------------------------------------------------------
def _flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def _may_change(key: str, may_change: Sequence[str]) -> bool:
  return any(key == k or (k.endswith('.') and key.startswith(k)) for k in may_change)


def read_config(workdir: str) -> Optional[dict]:
  """WORKDIR/config.json as a dict, None when there is none; one sentence when unreadable."""
  path = paths.join(workdir, CONFIG_FILE)
  if not paths.exists(path):
    return None
  try:
    return paths.read_json(path)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{path} is not valid JSON ({e}); the workdir cannot be resumed safely: '
                     'restore the file or use a new workdir.') from None


def config_differences(stored: Mapping[str, Any], config: ml_collections.ConfigDict,
                       may_change: Sequence[str] = RESUMABLE_KEYS) -> list[str]:
  """'key stored -> new' for every key that differs and may not change (keys only one side has,
  from another cvrl_jax version, are not compared)."""
  new = _flatten(json.loads(json.dumps(config.to_dict())))  # tuples -> lists, as stored
  old = _flatten(json.loads(json.dumps(stored)))
  return [f'{key} {old[key]!r} -> {new[key]!r}' for key in sorted(new)
          if key in old and old[key] != new[key] and key not in DERIVED_KEYS
          and not _may_change(key, may_change)]


def check_resume(workdir: str, config: ml_collections.ConfigDict,
                 may_change: Sequence[str] = RESUMABLE_KEYS) -> Optional[dict]:
  """Raises one ValueError sentence when `config` changes keys of the workdir's config.json that
  a resumed run may not change; returns the stored config (None for a new workdir)."""
  stored = read_config(workdir)
  if stored is None:
    return None
  diffs = config_differences(stored, config, may_change)
  if diffs:
    raise ValueError(
        f'The workdir {workdir} holds a run with another config ({"; ".join(diffs)}), and '
        f'{"this key" if len(diffs) == 1 else "these keys"} cannot change when a run resumes '
        '(docs/resuming.md lists the keys that can); use a new workdir or the original values.')
  return stored


def check_derived(stored: Optional[Mapping[str, Any]], config: ml_collections.ConfigDict,
                  workdir: str) -> None:
  """After the run has counted its data: the same number of training videos as before."""
  if stored is None:
    return
  old = _flatten(stored)
  new = _flatten(config.to_dict())
  for key in DERIVED_KEYS:
    if key in old and old[key] and old[key] != new[key]:
      raise ValueError(f'The workdir {workdir} holds a run over {old[key]} training videos '
                       f'({key}) and the data now has {new[key]}; resume it on the same videos '
                       'or use a new workdir.')


def finished_results(workdir: str) -> Optional[dict]:
  """results.json of the workdir when it records a finished run, else None."""
  path = paths.join(workdir, RESULTS_FILE)
  try:
    results = paths.read_json(path)
  except (OSError, json.JSONDecodeError, UnicodeDecodeError):
    return None
  return results if isinstance(results, dict) and results.get('finished') else None


# ------------------------------------------------------------------------------------------------
# Lock.
# ------------------------------------------------------------------------------------------------
def _describe(holder: Mapping[str, Any]) -> str:
  return (f'process {holder.get("pid", "?")} on {holder.get("host", "?")} '
          f'(started {holder.get("time", "?")})')


class WorkdirLock:
  """Exclusive use of a workdir by one run (process 0 holds it for all processes).

  WORKDIR/lock.json names the holder; an flock on it is what excludes, so a crashed or killed
  run leaves nothing stuck. On storage without file locks (some network file systems) the holder
  touches the file every HEARTBEAT_S; a lock whose process is no longer alive on this host, or
  one of another host untouched for STALE_AFTER_S, is taken over. Workdirs given as URLs
  (gs://...) are not locked (object stores have no locks); one run per workdir is then the
  user's to ensure.
  """

  # Workdirs this process holds -> how many holders; a job run by main.py under its lock may
  # take the same lock again (pretrain() locks for callers that do not go through main.py).
  _held: dict[str, int] = {}

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd: Optional[int] = None
    self._nested = False
    self._heartbeat: Optional[threading.Event] = None

  def acquire(self) -> 'WorkdirLock':
    key = os.path.realpath(self.workdir) if '://' not in self.workdir else self.workdir
    if WorkdirLock._held.get(key):
      WorkdirLock._held[key] += 1
      self._nested = True
      return self
    error = None
    if jax.process_index() == 0 and '://' not in self.workdir:
      try:
        self._acquire_local()
      except ValueError as e:
        error = str(e)
    if jax.process_count() > 1:
      failed = multihost_utils.broadcast_one_to_all(np.asarray(error is not None, np.int32))
      if bool(failed) and error is None:
        error = f'Process 0 could not lock the workdir {self.workdir} (its log says why).'
    if error:
      raise ValueError(error)
    WorkdirLock._held[key] = 1
    return self

  def _read_holder(self, fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 1 << 16).decode('utf-8', 'replace')
    try:
      holder = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
      holder = {}
    return holder if isinstance(holder, dict) else {}

  def _acquire_local(self) -> None:
    os.makedirs(self.workdir, exist_ok=True)
    me = {'host': socket.gethostname(), 'pid': os.getpid(),
          'time': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
    for _ in range(10):  # retried only if the file is replaced while we lock it
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locked = True
      except BlockingIOError:
        holder = self._read_holder(fd)
        os.close(fd)
        raise ValueError(f'The workdir {self.workdir} is in use by {_describe(holder)}; stop '
                         'that run or use another workdir.') from None
      except OSError as e:  # no file locks on this storage: judge by the recorded pid
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
          os.close(fd)
          raise
        locked = False
      if not os.path.exists(self.path) or os.fstat(fd).st_ino != os.stat(self.path).st_ino:
        os.close(fd)  # unlinked by the previous holder as we opened it: open the new one
        continue
      holder = self._read_holder(fd)
      if holder and (holder.get('host'), holder.get('pid')) != (me['host'], me['pid']):
        if (not locked and holder.get('host') == me['host']
            and run_utils.pid_alive(int(holder.get('pid', -1)))):
          os.close(fd)
          raise ValueError(f'The workdir {self.workdir} is in use by {_describe(holder)}; stop '
                           'that run or use another workdir.')
        idle = time.time() - os.fstat(fd).st_mtime
        if not locked and holder.get('host') != me['host'] and idle < STALE_AFTER_S:
          os.close(fd)
          raise ValueError(f'The workdir {self.workdir} is in use by {_describe(holder)} (its '
                           f'lock was renewed {idle:.0f} s ago); stop that run or use another '
                           'workdir.')
        logging.warning('Took over the workdir %s from %s, which ended without releasing it '
                        '(it crashed or was killed).', self.workdir, _describe(holder))
      os.ftruncate(fd, 0)
      os.lseek(fd, 0, os.SEEK_SET)
      os.write(fd, json.dumps(me).encode())
      os.fsync(fd)
      self._fd = fd
      if not locked:
        self._start_heartbeat()
      return
    raise ValueError(f'Could not lock the workdir {self.workdir}: {self.path} keeps changing.')

  def _start_heartbeat(self) -> None:
    stop = self._heartbeat = threading.Event()

    def beat():
      while not stop.wait(HEARTBEAT_S):
        try:
          os.utime(self.path)
        except OSError:
          pass

    threading.Thread(target=beat, name='workdir-lock-heartbeat', daemon=True).start()

  def release(self) -> None:
    key = os.path.realpath(self.workdir) if '://' not in self.workdir else self.workdir
    if WorkdirLock._held.get(key):
      WorkdirLock._held[key] -= 1
      if self._nested or WorkdirLock._held[key]:
        self._nested = False
        return
      del WorkdirLock._held[key]
    if self._heartbeat is not None:
      self._heartbeat.set()
      self._heartbeat = None
    if self._fd is not None:
      try:
        os.unlink(self.path)  # before unlocking: a waiting run then opens a new file
      except FileNotFoundError:
        pass
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> 'WorkdirLock':
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
