"""Whole pretraining runs over 8 fake CPU devices on real demo videos.

One uninterrupted 6-step run (module fixture) is inspected by several tests; the others resume
from its checkpoints or run `python -m cvrl_jax.main` in a subprocess, all with the same config
(and so the same compiled programs, shared through the persistent compilation cache).
"""
import json
import os
import shutil
import signal
import subprocess
import threading
import types

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cvrl_jax import run_utils
from cvrl_jax import trainer
import train_testlib as lib

PEAK_LR = lib.OVERRIDES['optim.base_lr'] * 16 / 32  # configs/demo.py's base batch is 32
STEPS_PER_EPOCH = lib.NUM_TRAIN_VIDEOS // 16
WARMUP_STEPS = round(0.5 * STEPS_PER_EPOCH)


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  base = tmp_path_factory.getbasetemp()
  cache = str(base / 'jax_cache')
  os.makedirs(cache, exist_ok=True)
  data = lib.make_demo_data(str(base / 'demo_data'))
  previous = lib.enable_compile_cache(cache)
  yield types.SimpleNamespace(cache=cache, data=data)
  lib.restore_compile_cache(previous)


@pytest.fixture(scope='module')
def uninterrupted(env, tmp_path_factory):
  run = lib.uninterrupted_run(env.data, str(tmp_path_factory.getbasetemp() / 'uninterrupted'))
  return types.SimpleNamespace(**run)


def _steps(workdir):
  return sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit())


def _copy_checkpoint(src_workdir, dst_workdir, step):
  shutil.copytree(os.path.join(src_workdir, 'checkpoints', str(step)),
                  os.path.join(dst_workdir, 'checkpoints', str(step)))


def _reference_lr(step):
  """The recipe's schedule for update `step` (0-based): linear warmup from 0, cosine to 0."""
  if step < WARMUP_STEPS:
    return PEAK_LR * step / WARMUP_STEPS
  return 0.5 * PEAK_LR * (1 + np.cos(np.pi * (step - WARMUP_STEPS) / (lib.NUM_STEPS - WARMUP_STEPS)))


def test_short_run_learns_and_writes_its_outputs(uninterrupted):
  workdir = uninterrupted.workdir
  steps = range(1, lib.NUM_STEPS + 1)
  losses = lib.losses(workdir, steps)
  assert np.all(np.isfinite(losses))
  assert losses[-2:].mean() < losses[:2].mean(), losses  # the loss falls

  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert results == uninterrupted.results
  assert results['step'] == lib.NUM_STEPS and results['finished'] is True
  assert results['train/loss'] == pytest.approx(losses[-1], rel=1e-6)  # one step per log window
  assert 0.0 <= results['train/contrastive_accuracy'] <= 1.0
  assert results['train/clips_per_sec'] == pytest.approx(results['train/steps_per_sec'] * 32)

  learning_rates = lib.read_scalars(workdir, 'train/learning_rate')
  np.testing.assert_allclose([learning_rates[s] for s in steps],
                             [_reference_lr(s - 1) for s in steps], rtol=1e-5, atol=1e-7)

  with open(os.path.join(workdir, 'config.json')) as f:
    config = json.load(f)
  assert config['data']['num_train_examples'] == lib.NUM_TRAIN_VIDEOS  # counted from the files
  assert config['batch_size'] == 16
  assert _steps(workdir) == [3, 6]


def test_resume_continues_exactly(uninterrupted, env, tmp_path):
  workdir = str(tmp_path)
  _copy_checkpoint(uninterrupted.workdir, workdir, lib.CHECKPOINT_EVERY)
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'), item_names=('state', 'data'))
  record = manager.restore(lib.CHECKPOINT_EVERY, args=ocp.args.Composite(
      data=ocp.args.JsonRestore()))['data']
  manager.close()
  assert record['positions'] == [[0, 3 * 16]]  # 3 batches of 16 into the 64-video epoch 0

  results = trainer.pretrain(lib.demo_config(env.data), workdir)

  after = range(lib.CHECKPOINT_EVERY + 1, lib.NUM_STEPS + 1)
  assert sorted(lib.read_scalars(workdir, 'train/loss')) == list(after)
  np.testing.assert_allclose(lib.losses(workdir, after), lib.losses(uninterrupted.workdir, after),
                             rtol=1e-6)
  norms = [lib.read_scalars(w, 'train/param_norm')[lib.NUM_STEPS]
           for w in (workdir, uninterrupted.workdir)]
  assert norms[0] == pytest.approx(norms[1], rel=1e-6)
  assert results['step'] == lib.NUM_STEPS


def test_sigterm_saves_and_exits_cleanly(uninterrupted, env, tmp_path):
  del uninterrupted  # only here so its compilations are cached first
  workdir = str(tmp_path)
  proc = subprocess.Popen(lib.main_command(env.data, workdir), env=lib.subprocess_env(env.cache),
                          cwd=lib.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  output = []
  watchdog = threading.Timer(600, proc.kill)  # a hung run fails the test instead of blocking it
  watchdog.start()
  try:
    for line in proc.stdout:
      output.append(line)
      if f'step 1/{lib.NUM_STEPS} ' in line:
        proc.send_signal(signal.SIGTERM)
        break
    rest, _ = proc.communicate()
  finally:
    watchdog.cancel()
    proc.kill()
  output = ''.join(output) + rest
  assert proc.returncode == 0, output
  stopped = [l for l in output.splitlines() if 'Stopped by SIGTERM after step' in l]
  assert stopped, output
  step = int(stopped[0].split('after step ')[1].split(';')[0])
  assert 2 <= step < lib.NUM_STEPS  # the flag is read after each step's dispatch
  assert step in _steps(workdir)
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert results['finished'] is False and results['step'] == step


def test_divergence_stops_without_saving(uninterrupted, env, tmp_path):
  """Momentum buffers made huge (1e38, still finite: a checkpoint holding infinities is skipped
  as corrupt on restore) in a copy of the step-3 checkpoint: the update of step 4 makes the
  parameter norm overflow; the run must stop there and not save (checkpoints every step)."""
  workdir = str(tmp_path)
  source = ocp.CheckpointManager(os.path.join(uninterrupted.workdir, 'checkpoints'),
                                 item_names=('state', 'data'))
  restored = source.restore(lib.CHECKPOINT_EVERY, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore()))
  source.close()
  state = restored['state']
  in_trace = lambda path: any(getattr(k, 'key', None) == 'trace' for k in path)
  state['opt_state'] = jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.full_like(x, 1e38) if in_trace(path) else x, state['opt_state'])
  target = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'), item_names=('state', 'data'))
  target.save(lib.CHECKPOINT_EVERY, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(restored['data'])))
  target.wait_until_finished()
  target.close()

  config = lib.demo_config(env.data)
  config.checkpoint.every_steps = 1
  with pytest.raises(run_utils.NonFiniteLossError) as error:
    trainer.pretrain(config, workdir)
  message = str(error.value)
  assert 'at step 4' in message and 'parameter norm is' in message
  assert os.path.join(workdir, 'checkpoints', '3') in message
  assert _steps(workdir) == [3]
