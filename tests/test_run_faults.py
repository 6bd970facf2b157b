"""Faults a run survives (docs/resuming.md, README "What a run guarantees"): a checkpoint policy,
corrupt checkpoints, a full disk, a second run on the same workdir, a changed config on resume,
Ctrl-C. Each test first builds the fault that used to break a run (issue 18), then checks the
promised behaviour: one sentence naming the input, or the previous good state kept.

Small pieces run in-process on a tiny state; the processes that hold a lock or receive signals
are short Python subprocesses that import only what they need.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvrl_jax import checkpoint as checkpoint_lib
from cvrl_jax import config_lib
from cvrl_jax import workdir as workdir_lib
import train_testlib as lib
from train_testlib import env  # noqa: F401  (a fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _state(seed):
  rng = np.random.default_rng(seed)
  return {'w': jnp.asarray(rng.normal(size=(64, 8)), jnp.float32),
          'b': jnp.asarray(rng.normal(size=(8,)), jnp.float32),
          'step': jnp.asarray(seed, jnp.int32)}


def _abstract():
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                     sharding=jax.sharding.SingleDeviceSharding(
                                                         jax.devices()[0])), _state(0))


def _save_steps(directory, steps, keep=5, keep_every_steps=0, values=None):
  ckpt = checkpoint_lib.Checkpointer(directory, every_steps=1, keep=keep,
                                     keep_every_steps=keep_every_steps, async_save=False)
  for step in steps:
    ckpt.save(step, (values or _state)(step), (0, step), 'records')
  ckpt.wait()
  ckpt.close()


def _python(code, **kwargs):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1', TF_CPP_MIN_LOG_LEVEL='3')
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [REPO, env.get('PYTHONPATH')]))
  return subprocess.Popen([sys.executable, '-c', code], env=env, cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def _mount_tmpfs(path, options):
  """A small tmpfs at `path` (root only); skips the test where mounting is not allowed."""
  os.makedirs(path, exist_ok=True)
  if os.geteuid() != 0:
    pytest.skip('mounting a tmpfs needs root')
  done = subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', path],
                        capture_output=True, text=True)
  if done.returncode != 0:
    pytest.skip(f'cannot mount a tmpfs here ({done.stderr.strip()})')
  return path


# ------------------------------------------------------------------------------------------------
# Checkpoint policy (issue 17 item 3): Orbax preservation policies.
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('keep,keep_every_steps,expected', [
    (2, 0, [9, 10]),  # the last 2
    (2, 4, [4, 8, 9, 10]),  # the last 2, and every multiple of 4
    (3, 5, [5, 8, 9, 10]),
])
def test_checkpoint_policy_keeps_the_last_n_and_every_kth(tmp_path, keep, keep_every_steps,
                                                          expected):
  _save_steps(str(tmp_path), range(1, 11), keep=keep, keep_every_steps=keep_every_steps)
  on_disk = sorted(int(n) for n in os.listdir(tmp_path) if n.isdigit())
  assert on_disk == expected


def test_keep_every_steps_is_validated():
  config = config_lib.base_config()
  config.checkpoint.keep_every_steps = -1
  with pytest.raises(ValueError, match=r'config\.checkpoint\.keep_every_steps must be >= 0'):
    config_lib.validate(config)
  config.checkpoint.every_steps, config.checkpoint.keep_every_steps = 300, 1000
  with pytest.raises(ValueError, match=r'^config\.checkpoint\.keep_every_steps=1000 must be a '
                                       r'multiple of config\.checkpoint\.every_steps=300, '):
    config_lib.validate(config)
  config.checkpoint.keep_every_steps = 3000
  config_lib.validate(config)


# ------------------------------------------------------------------------------------------------
# Corrupt checkpoints (issue 18 item 4): checked on restore, the previous complete one is used.
# ------------------------------------------------------------------------------------------------
def _truncate_largest_array_file(step_dir):
  files = [os.path.join(root, f) for root, _, names in os.walk(os.path.join(step_dir, 'state'))
           for f in names]
  largest = max(files, key=os.path.getsize)  # an array data file of the OCDBT store
  with open(largest, 'r+b') as f:
    f.truncate(os.path.getsize(largest) // 2)


def _empty_data_metadata(step_dir):
  open(os.path.join(step_dir, 'data', 'metadata'), 'w').close()


def _nan_weights(step_dir):
  """Rewrites the step as a complete checkpoint whose weights hold a NaN (what flipped bytes in
  an uncompressed float chunk restore as)."""
  directory, step = os.path.dirname(step_dir), int(os.path.basename(step_dir))
  os.rename(step_dir, step_dir + '.old')
  values = lambda s: dict(_state(s), w=_state(s)['w'].at[3, 1].set(jnp.nan))
  _save_steps(directory, [step], values=values)


@pytest.mark.parametrize('damage', [_truncate_largest_array_file, _empty_data_metadata,
                                    _nan_weights])
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, caplog):
  directory = str(tmp_path / 'checkpoints')
  _save_steps(directory, [1, 2, 3])
  damage(os.path.join(directory, '3'))

  ckpt = checkpoint_lib.Checkpointer(directory, every_steps=1, keep=5, async_save=False)
  with caplog.at_level('WARNING'):
    step, state, record = ckpt.restore_latest(_abstract())
  assert step == 2 and record['positions'] == [[0, 2]]
  for name, value in _state(2).items():
    np.testing.assert_array_equal(np.asarray(state[name]), np.asarray(value))
  warnings = [r.getMessage() for r in caplog.records if 'is not usable' in r.getMessage()]
  assert len(warnings) == 1
  assert os.path.join(directory, '3') in warnings[0]
  assert f'resuming from {os.path.join(directory, "2")}' in warnings[0]
  # Moved aside, not deleted; the manager no longer lists it, so step 3 can be written again.
  assert os.path.isdir(directory + '.corrupt/3')
  assert ckpt.all_steps() == [1, 2] or sorted(ckpt.all_steps()) == [1, 2]
  ckpt.save(3, _state(3), (0, 3), 'records')
  ckpt.wait()
  assert sorted(ckpt.all_steps()) == [1, 2, 3]
  ckpt.close()


def test_no_usable_checkpoint_starts_from_scratch(tmp_path, caplog):
  directory = str(tmp_path / 'checkpoints')
  _save_steps(directory, [1])
  _empty_data_metadata(os.path.join(directory, '1'))
  ckpt = checkpoint_lib.Checkpointer(directory, every_steps=1, keep=5, async_save=False)
  with caplog.at_level('WARNING'):
    assert ckpt.restore_latest(_abstract()) is None
  ckpt.close()
  assert any('no earlier checkpoint is complete' in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------------
# A full disk (issue 18 item 9): reported at the checkpoint that failed; the previous one stays.
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
  path = _mount_tmpfs(str(tmp_path / 'disk'), 'size=1m')
  yield path
  subprocess.run(['umount', '-l', path], check=False)


def test_a_full_disk_is_one_sentence_at_the_checkpoint_that_failed(small_disk):
  directory = os.path.join(small_disk, 'checkpoints')
  big = lambda s: {'w': jnp.asarray(np.random.default_rng(s).normal(size=(12_000,)), jnp.float32)}
  ckpt = checkpoint_lib.Checkpointer(directory, every_steps=1, keep=5, async_save=True)
  ckpt.save(1, big(1), (0, 1), 'records')  # ~50 kB: fits
  ckpt.wait()
  ckpt.save(2, big(2), (0, 2), 'records')
  ckpt.wait()
  filler = os.open(os.path.join(small_disk, 'filler'), os.O_WRONLY | os.O_CREAT)
  try:  # the rest of the disk
    while True:
      os.write(filler, b'\0' * 4096)
  except OSError:
    os.close(filler)
  with pytest.raises(checkpoint_lib.CheckpointWriteError) as error:
    ckpt.save(3, big(3), (0, 3), 'records')  # does not fit
    deadline = time.time() + 120
    while time.time() < deadline:  # the training loop polls between steps
      ckpt.poll()
      time.sleep(0.05)
  message = str(error.value)
  assert '\n' not in message
  assert f'checkpoint of step 3 to {os.path.join(directory, "3")} failed' in message
  assert 'no space left on device' in message
  assert f'the previous checkpoint {os.path.join(directory, "2")} is intact' in message
  ckpt.close()

  reader = checkpoint_lib.Checkpointer(directory, every_steps=1, keep=5, async_save=False)
  assert reader.latest_step() == 2
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=jax.sharding
                                                         .SingleDeviceSharding(jax.devices()[0])),
                          big(2))
  step, state, _ = reader.restore_latest(abstract)
  assert step == 2
  np.testing.assert_array_equal(np.asarray(state['w']), np.asarray(big(2)['w']))
  reader.close()


# ------------------------------------------------------------------------------------------------
# The workdir lock (issue 18 item 5).
# ------------------------------------------------------------------------------------------------
HOLD_LOCK = '''
import sys, time
from cvrl_jax import workdir
lock = workdir.WorkdirLock(sys.argv[1]).acquire()
print('locked', flush=True)
time.sleep(600)
'''


def test_a_second_run_on_a_locked_workdir_stops_and_a_killed_run_leaves_no_stuck_lock(tmp_path,
                                                                                       caplog):
  workdir = str(tmp_path / 'run')
  holder = _python(HOLD_LOCK.replace('sys.argv[1]', repr(workdir)))
  try:
    assert holder.stdout.readline().strip() == 'locked'
    with pytest.raises(ValueError) as error:
      workdir_lib.WorkdirLock(workdir).acquire()
    message = str(error.value)
    assert f'The workdir {workdir} is in use by process {holder.pid} on {socket.gethostname()}' \
        in message and '\n' not in message
  finally:
    holder.send_signal(signal.SIGKILL)  # a crash: nothing is released
    holder.wait()
  assert json.load(open(os.path.join(workdir, 'lock.json')))['pid'] == holder.pid  # left behind

  with caplog.at_level('WARNING'):
    lock = workdir_lib.WorkdirLock(workdir).acquire()
  assert any(f'from process {holder.pid} on' in r.getMessage() and 'crashed or was killed'
             in r.getMessage() for r in caplog.records)
  assert json.load(open(os.path.join(workdir, 'lock.json')))['pid'] == os.getpid()
  lock.release()
  assert not os.path.exists(os.path.join(workdir, 'lock.json'))  # a clean end removes it


def test_lock_without_file_locks_judges_by_the_recorded_process(tmp_path, monkeypatch, caplog):
  """Storage without flock (some network file systems): a recorded pid that is alive on this host
  refuses, a dead one is taken over."""
  import errno  # pylint: disable=g-import-not-at-top
  import fcntl  # pylint: disable=g-import-not-at-top

  def no_flock(fd, op):
    raise OSError(errno.ENOLCK, 'No locks available')

  monkeypatch.setattr(fcntl, 'flock', no_flock)
  workdir = str(tmp_path)
  sleeper = subprocess.Popen(['sleep', '600'])
  lock_file = os.path.join(workdir, 'lock.json')
  try:
    with open(lock_file, 'w') as f:
      json.dump({'host': socket.gethostname(), 'pid': sleeper.pid, 'time': 'then'}, f)
    with pytest.raises(ValueError, match=f'in use by process {sleeper.pid} on'):
      workdir_lib.WorkdirLock(workdir).acquire()
  finally:
    sleeper.kill()
    sleeper.wait()
  with caplog.at_level('WARNING'):
    workdir_lib.WorkdirLock(workdir).acquire().release()
  assert any(f'from process {sleeper.pid} on' in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------------
# A changed config on resume (issue 18 item 3).
# ------------------------------------------------------------------------------------------------
def _workdir_with_run(tmp_path, config):
  workdir = str(tmp_path / 'run')
  os.makedirs(os.path.join(workdir, 'checkpoints', '3'))
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True)
  return workdir


def test_resume_with_a_changed_model_seed_or_lr_refuses_before_writing(tmp_path):
  from cvrl_jax import trainer  # pylint: disable=g-import-not-at-top
  config = config_lib.base_config()
  workdir = _workdir_with_run(tmp_path, config)
  before = {name: open(os.path.join(workdir, name), 'rb').read() for name in ['config.json']}
  changed = config_lib.base_config()
  changed.model.width_multiplier = 2.0
  changed.seed = 7
  changed.optim.base_lr = 0.1
  changed.num_train_steps = 50  # may change: not named
  changed.checkpoint.every_steps = 10  # may change: not named
  with pytest.raises(ValueError) as error:
    trainer.pretrain(changed, workdir)
  message = str(error.value)
  assert '\n' not in message
  assert ('(model.width_multiplier 1.0 -> 2.0; optim.base_lr 0.32 -> 0.1; seed 0 -> 7)'
          in message), message
  assert 'num_train_steps' not in message and 'every_steps' not in message
  assert 'docs/resuming.md' in message
  # Nothing written: the workdir holds what it held.
  assert sorted(os.listdir(workdir)) == ['checkpoints', 'config.json']
  assert open(os.path.join(workdir, 'config.json'), 'rb').read() == before['config.json']


def test_keys_that_may_change_are_accepted_and_documented():
  stored = config_lib.base_config().to_dict()
  config = config_lib.base_config()
  config.num_train_steps = 123
  config.log_every_steps = 7
  config.checkpoint.keep = 9
  config.checkpoint.keep_every_steps = 100
  config.mesh.fsdp = 2
  config.data.train_files = 'gs://bucket/train-*.tfrecord'
  config.data.num_train_examples = 5  # derived: compared after counting
  assert workdir_lib.config_differences(stored, config) == []
  # Every key the docs list is one the code accepts, and the other way round.
  docs = open(os.path.join(REPO, 'docs', 'resuming.md')).read()
  for key in workdir_lib.RESUMABLE_KEYS + workdir_lib.EVAL_RESUMABLE_KEYS:
    assert f'`{key.rstrip(".")}' in docs, key


def test_resume_on_other_data_refuses(tmp_path):
  config = config_lib.base_config()
  stored = json.loads(json.dumps(dict(config.to_dict())))
  stored['data']['num_train_examples'] = 64
  config.data.num_train_examples = 80
  with pytest.raises(ValueError, match=r'holds a run over 64 training videos .* now has 80'):
    workdir_lib.check_derived(stored, config, str(tmp_path))


# ------------------------------------------------------------------------------------------------
# Ctrl-C (issue 18 item 6): the first saves like SIGTERM, a second exits at once.
# ------------------------------------------------------------------------------------------------
WATCH = '''
import time
from cvrl_jax import run_utils
watcher = run_utils.PreemptionWatcher()
print('ready', flush=True)
while not watcher.reached(0):
  time.sleep(0.01)
print('stop requested by', watcher.signal_name, flush=True)
time.sleep(600)  # a long save: only a second Ctrl-C ends it
'''


def test_ctrl_c_requests_a_save_and_a_second_one_exits_at_once():
  proc = _python(WATCH)
  try:
    assert proc.stdout.readline().strip() == 'ready'
    proc.send_signal(signal.SIGINT)
    lines = []
    for line in proc.stdout:
      lines.append(line)
      if line.startswith('stop requested by'):
        break
    assert lines[-1].strip() == 'stop requested by SIGINT', lines
    start = time.time()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert time.time() - start < 5
    assert proc.returncode == -signal.SIGINT
  finally:
    proc.kill()


# ------------------------------------------------------------------------------------------------
# Whole runs (the 6-step demo run of train_testlib, shared with tests/test_train.py).
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def uninterrupted(env, tmp_path_factory):  # noqa: F811
  return lib.uninterrupted_run(env.data, str(tmp_path_factory.getbasetemp() / 'uninterrupted'))


def _copy_run(source, target, steps, files=('config.json',)):
  os.makedirs(os.path.join(target, 'checkpoints'))
  for step in steps:
    shutil.copytree(os.path.join(source, 'checkpoints', str(step)),
                    os.path.join(target, 'checkpoints', str(step)))
  for name in files:
    path = os.path.join(source, name)
    (shutil.copytree if os.path.isdir(path) else shutil.copy)(path, os.path.join(target, name))


def test_a_run_resumes_past_a_nan_checkpoint_and_exports_finite_weights(uninterrupted, env,
                                                                        tmp_path, caplog):
  """The latest checkpoint (step 6) holds a NaN weight: the run resumes from step 3 instead, with
  a warning naming both, trains steps 4-6 to the uninterrupted run's losses and exports a finite
  backbone (before: it restored the NaN silently, exited 0 and exported it)."""
  from cvrl_jax import export, trainer  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  source, workdir = uninterrupted['workdir'], str(tmp_path / 'run')
  _copy_run(source, workdir, [lib.CHECKPOINT_EVERY])
  manager = ocp.CheckpointManager(os.path.join(source, 'checkpoints'), item_names=('state', 'data'))
  restored = manager.restore(lib.NUM_STEPS, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore()))
  manager.close()
  kernel = restored['state']['params']['backbone']['stem_conv']['kernel']
  restored['state']['params']['backbone']['stem_conv']['kernel'] = kernel.at[0, 0, 0, 0, 0].set(
      jnp.nan)
  target = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'), item_names=('state', 'data'))
  target.save(lib.NUM_STEPS, args=ocp.args.Composite(
      state=ocp.args.StandardSave(restored['state']), data=ocp.args.JsonSave(restored['data'])))
  target.wait_until_finished()
  target.close()

  with caplog.at_level('WARNING'):
    results = trainer.pretrain(lib.demo_config(env.data), workdir)
  bad, good = (os.path.join(workdir, 'checkpoints', str(s))
               for s in (lib.NUM_STEPS, lib.CHECKPOINT_EVERY))
  warnings = [r.getMessage() for r in caplog.records if 'is not usable' in r.getMessage()]
  assert warnings == [f'The checkpoint {bad} is not usable: it holds NaN or infinite values '
                      "(.params['backbone']['stem_conv']['kernel']); resuming from "
                      f'{good} (it was moved to {workdir}/checkpoints.corrupt/{lib.NUM_STEPS}).'], \
      warnings
  after = range(lib.CHECKPOINT_EVERY + 1, lib.NUM_STEPS + 1)
  np.testing.assert_allclose(lib.losses(workdir, after), lib.losses(source, after), rtol=1e-6)
  assert results['step'] == lib.NUM_STEPS and results['finished'] is True
  _, variables, _ = export.load_backbone(os.path.join(workdir, 'backbone'))
  assert checkpoint_lib.non_finite_leaves(variables) == []


def test_rerunning_a_finished_run_keeps_its_results(uninterrupted, env, tmp_path):
  """Before: the re-run rewrote results.json with every metric gone."""
  from cvrl_jax import trainer  # pylint: disable=g-import-not-at-top
  source, workdir = uninterrupted['workdir'], str(tmp_path / 'run')
  _copy_run(source, workdir, [lib.CHECKPOINT_EVERY, lib.NUM_STEPS],
            files=('config.json', 'results.json', 'backbone'))
  before = open(os.path.join(workdir, 'results.json')).read()
  results = trainer.pretrain(lib.demo_config(env.data), workdir)
  assert results == uninterrupted['results'] and 'train/loss' in results
  assert open(os.path.join(workdir, 'results.json')).read() == before
  assert not os.path.exists(os.path.join(workdir, 'lock.json'))


def test_ctrl_c_saves_like_sigterm(uninterrupted, env, tmp_path):  # noqa: F811
  """Before: Ctrl-C raised KeyboardInterrupt and lost the steps since the last checkpoint."""
  del uninterrupted  # only here so its compilations are cached first
  workdir = str(tmp_path / 'run')
  proc = subprocess.Popen(lib.main_command(env.data, workdir), env=lib.subprocess_env(env.cache),
                          cwd=lib.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  output = []
  try:
    for line in proc.stdout:
      output.append(line)
      if f'step 1/{lib.NUM_STEPS} ' in line:
        proc.send_signal(signal.SIGINT)
        break
    rest, _ = proc.communicate(timeout=600)
  finally:
    proc.kill()
  output = ''.join(output) + rest
  assert proc.returncode == 0, output
  stopped = [l for l in output.splitlines() if 'Stopped by SIGINT after step' in l]
  assert stopped, output
  step = int(stopped[0].split('after step ')[1].split(';')[0])
  assert 1 <= step < lib.NUM_STEPS
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', str(step)))
  assert 'Traceback' not in output and 'KeyboardInterrupt' not in output
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f)['step'] == step


def test_a_full_disk_stops_the_run_at_that_checkpoint_and_it_resumes_once_freed(uninterrupted, env,
                                                                                 tmp_path):
  """The disk has room for one checkpoint: the step-6 write fails, the run stops naming it and
  the intact step-3 checkpoint (before: a checkpoint interval late, under ~700 lines of
  tracebacks); with space freed, the same run resumes from step 3 to the uninterrupted losses."""
  from cvrl_jax import trainer  # pylint: disable=g-import-not-at-top
  source = uninterrupted['workdir']
  checkpoint_bytes = sum(os.path.getsize(os.path.join(root, f)) for root, _, names in
                         os.walk(os.path.join(source, 'checkpoints', str(lib.CHECKPOINT_EVERY)))
                         for f in names)
  disk = _mount_tmpfs(str(tmp_path / 'disk'), f'size={4 * checkpoint_bytes + (8 << 20)}')
  try:
    filler = os.path.join(disk, 'filler')
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    with open(filler, 'wb') as f:  # leave room for 1.5 checkpoints and the small files
      f.write(b'\0' * int(free - 1.5 * checkpoint_bytes - (1 << 20)))
    workdir = os.path.join(disk, 'run')
    with pytest.raises(checkpoint_lib.CheckpointWriteError) as error:
      trainer.pretrain(lib.demo_config(env.data), workdir)
    step_dir = lambda s: os.path.join(workdir, 'checkpoints', str(s))
    assert str(error.value) == (
        f'Writing the checkpoint of step {lib.NUM_STEPS} to {step_dir(lib.NUM_STEPS)} failed (no '
        f'space left on device); the previous checkpoint {step_dir(lib.CHECKPOINT_EVERY)} is '
        'intact, and the same command resumes from it once the problem is fixed.')
    assert not os.path.exists(os.path.join(workdir, 'lock.json'))

    os.remove(filler)
    results = trainer.pretrain(lib.demo_config(env.data), workdir)
    after = range(lib.CHECKPOINT_EVERY + 1, lib.NUM_STEPS + 1)
    resumed = {s: v for s, v in lib.read_scalars(workdir, 'train/loss').items() if s in after}
    np.testing.assert_allclose([resumed[s] for s in after], lib.losses(source, after), rtol=1e-6)
    assert results['step'] == lib.NUM_STEPS and results['finished'] is True
  finally:
    subprocess.run(['umount', '-l', disk], check=False)


def test_a_resumed_evaluation_job_refuses_a_changed_protocol_before_writing(tmp_path):
  from cvrl_jax.evaluate import common  # pylint: disable=g-import-not-at-top
  config = config_lib.base_config()
  config.job = 'linear_eval'
  config.data.num_classes = 10
  workdir = _workdir_with_run(tmp_path, config)
  before = open(os.path.join(workdir, 'config.json'), 'rb').read()
  changed = config_lib.base_config()
  changed.job = 'linear_eval'
  changed.data.num_classes = 10
  changed.eval.batch_size = 16  # may change: throughput only
  changed.eval.test_mode = 'center_clip'
  changed.optim.base_lr = 1.0
  with pytest.raises(ValueError, match=r"another config \(eval\.test_mode 'test_views' -> "
                                       r"'center_clip'; optim\.base_lr 0\.32 -> 1\.0\)"):
    common.start_job(changed, workdir)
  assert open(os.path.join(workdir, 'config.json'), 'rb').read() == before
  changed.eval.test_mode, changed.optim.base_lr = 'test_views', 0.32
  common.start_job(changed, workdir)  # only eval.batch_size differs: resumes


def test_the_workdir_lock_nests_within_one_process(tmp_path):
  """main.py locks the workdir for every job and pretrain() locks it again for direct callers."""
  outer = workdir_lib.WorkdirLock(str(tmp_path)).acquire()
  inner = workdir_lib.WorkdirLock(str(tmp_path)).acquire()
  inner.release()
  assert json.load(open(tmp_path / 'lock.json'))['pid'] == os.getpid()  # still held
  probe = _python(HOLD_LOCK.replace('sys.argv[1]', repr(str(tmp_path))))
  assert 'in use by process' in probe.communicate(timeout=120)[0]
  outer.release()
  assert not (tmp_path / 'lock.json').exists()


def test_lock_of_another_host_without_file_locks_is_taken_over_once_stale(tmp_path, monkeypatch):
  import errno  # pylint: disable=g-import-not-at-top
  import fcntl  # pylint: disable=g-import-not-at-top

  def no_flock(fd, op):
    raise OSError(errno.ENOLCK, 'No locks available')

  monkeypatch.setattr(fcntl, 'flock', no_flock)
  lock_file = tmp_path / 'lock.json'
  lock_file.write_text(json.dumps({'host': 'other-host', 'pid': 1, 'time': 'then'}))
  with pytest.raises(ValueError, match=r'in use by process 1 on other-host .*renewed \d+ s ago'):
    workdir_lib.WorkdirLock(str(tmp_path)).acquire()
  stale = time.time() - workdir_lib.STALE_AFTER_S - 1
  os.utime(lock_file, (stale, stale))  # its holder stopped renewing it
  lock = workdir_lib.WorkdirLock(str(tmp_path)).acquire()
  assert json.loads(lock_file.read_text())['pid'] == os.getpid()
  lock.release()


def test_a_second_main_on_a_busy_workdir_is_one_sentence(env, tmp_path):  # noqa: F811
  """Before: two runs on one workdir both wrote checkpoints."""
  workdir = str(tmp_path / 'run')
  holder = _python(HOLD_LOCK.replace('sys.argv[1]', repr(workdir)))
  try:
    assert holder.stdout.readline().strip() == 'locked'
    second = lib.run(lib.main_command(env.data, workdir), lib.subprocess_env(env.cache), 600)
  finally:
    holder.kill()
    holder.wait()
  assert second.returncode == 1
  assert 'Traceback' not in second.stdout + second.stderr
  last = second.stderr.strip().splitlines()[-1]
  assert last.startswith(f'Error: The workdir {workdir} is in use by process {holder.pid} on '
                         f'{socket.gethostname()} (started '), last
  assert last.endswith('); stop that run or use another workdir.'), last
  assert sorted(os.listdir(workdir)) == ['lock.json']  # the second run wrote nothing
