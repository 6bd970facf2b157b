"""Shared set-up of the trainer tests: a tiny config on real demo videos, a compile cache.

Every run in tests/test_train*.py and tests/test_multihost*.py uses the same config (the same
XLA programs), and a persistent compilation cache in the session's temporary folder lets the
in-process runs and the `python -m cvrl_jax.main` subprocesses reuse each other's compilations.
"""
import glob
import os
import shutil
import socket
import subprocess
import sys
import types
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf
from jax.experimental.compilation_cache import compilation_cache

from cvrl_jax import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO, 'configs', 'demo.py')
NUM_TRAIN_VIDEOS = 64
NUM_STEPS = 6
CHECKPOINT_EVERY = 3

# The smallest CVRL run that still exercises everything: R3D-18 at 1/8 width, 2 clips x 4 frames
# of 32 x 32 per video, 16 videos a step (2 per device), 4 steps per epoch of the 64 videos.
OVERRIDES: Mapping[str, Any] = {
    'batch_size': 16,
    'num_train_steps': NUM_STEPS,
    'log_every_steps': 1,
    'checkpoint.every_steps': CHECKPOINT_EVERY,
    'checkpoint.keep': 5,
    'data.num_frames': 4,
    'data.image_size': 32,
    'data.shuffle_buffer': 64,
    'data.host_split': 'records',
    'model.width_multiplier': 0.125,
    'model.conv_impl': 'conv3d',  # compiles faster on CPU than the default there, 'factorized'
    'objective.head_hidden_dim': 32,
    'objective.head_output_dim': 16,
    'optim.warmup_epochs': 0.5,
    # A gentle learning rate: the tiny network's first gradients are large (norm ~700), and at
    # the demo's rate its state turns ill-conditioned within a few steps, so float noise (a
    # different reduction order across processes) would grow into visibly different losses.
    'optim.base_lr': 0.02,
}
CACHE_FLAGS = {
    'jax_persistent_cache_min_compile_time_secs': 0.0,
    'jax_persistent_cache_min_entry_size_bytes': 0,
}


def make_demo_data(folder: str) -> str:
  """Writes (once per session) the demo videos the runs train on; returns the folder."""
  from cvrl_jax.data import demo  # pylint: disable=g-import-not-at-top
  if not glob.glob(os.path.join(folder, 'train-*.tfrecord')):
    demo.make_demo_dataset(folder, num_train=NUM_TRAIN_VIDEOS, num_test=16, num_frames=16,
                           canvas=32, num_train_shards=2, num_test_shards=1)
  return folder


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  """The session's demo videos and compile cache (shared by every module that imports this)."""
  base = tmp_path_factory.getbasetemp()
  cache = str(base / 'jax_cache')
  os.makedirs(cache, exist_ok=True)
  data = make_demo_data(str(base / 'demo_data'))
  previous = enable_compile_cache(cache)
  yield types.SimpleNamespace(cache=cache, data=data, base=base)
  restore_compile_cache(previous)


def demo_config(data_dir: str, **extra: Any) -> ml_collections.ConfigDict:
  config = config_lib.load_config_file('demo', data_dir)
  for key, value in {**OVERRIDES, **extra}.items():
    *parents, leaf = key.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def override_flags(**extra: Any) -> list[str]:
  return [f'--config.{k}={v}' for k, v in {**OVERRIDES, **extra}.items()]


def enable_compile_cache(cache_dir: str) -> dict:
  """Turns on JAX's persistent compilation cache in this process; returns the previous settings."""
  previous = {name: getattr(jax.config, name) for name in ('jax_compilation_cache_dir', *CACHE_FLAGS)}
  jax.config.update('jax_compilation_cache_dir', cache_dir)
  for name, value in CACHE_FLAGS.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()
  return previous


def restore_compile_cache(previous: dict) -> None:
  for name, value in previous.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()


def subprocess_env(cache_dir: str, num_devices: int = 8) -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={num_devices}',
             JAX_COMPILATION_CACHE_DIR=cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [REPO, env.get('PYTHONPATH')]))
  return env


def main_command(data_dir: str, workdir: str, *args: str, **extra: Any) -> list[str]:
  return [sys.executable, '-m', 'cvrl_jax.main', f'--config={DEMO_CONFIG}:{data_dir}',
          f'--workdir={workdir}', *override_flags(**extra), *args]


_UNINTERRUPTED: dict = {}


def uninterrupted_run(data_dir: str, workdir: str) -> dict:
  """The reference run (NUM_STEPS steps, no interruption), done once per test session."""
  from cvrl_jax import trainer  # pylint: disable=g-import-not-at-top
  if data_dir not in _UNINTERRUPTED:
    results = trainer.pretrain(demo_config(data_dir), workdir)
    _UNINTERRUPTED[data_dir] = {'workdir': workdir, 'results': results}
  return _UNINTERRUPTED[data_dir]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


_TWO_PROCESS: dict = {}


def two_process_run(data_dir: str, workdir: str, cache_dir: str) -> dict:
  """The NUM_STEPS steps as 2 processes x 4 CPU devices started by hand (once per session).

  The reference of the multi-host and launcher tests: processes meeting through jax.distributed on
  a local port (`--coordinator_address/--num_processes/--process_id`), as on GPU hosts without a
  scheduler. Returns {'workdir', 'outputs': each process's log}.
  """
  if data_dir not in _TWO_PROCESS:
    port = free_port()
    procs = [subprocess.Popen(
        main_command(data_dir, workdir, f'--coordinator_address=localhost:{port}',
                     '--num_processes=2', f'--process_id={i}'),
        env=subprocess_env(cache_dir, num_devices=4), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = []
    try:
      for proc in procs:
        outputs.append(proc.communicate(timeout=900)[0])
    finally:
      for proc in procs:
        proc.kill()
    for proc, output in zip(procs, outputs):
      assert proc.returncode == 0, output
    _TWO_PROCESS[data_dir] = {'workdir': workdir, 'outputs': outputs}
  return _TWO_PROCESS[data_dir]


def read_scalars(workdir: str, tag: str) -> dict[int, float]:
  """{step: value} of one scalar from the TensorBoard event files in `workdir`."""
  values = {}
  for path in sorted(glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return values


def losses(workdir: str, steps: Sequence[int]) -> np.ndarray:
  scalars = read_scalars(workdir, 'train/loss')
  return np.array([scalars[s] for s in steps])


def run(command: Sequence[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
  return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True,
                        timeout=timeout)


def lr_scaled_losses(objective, init_state, make_clips, batch: int,
                     lr_scales: Sequence[float] = (1.0, 0.0),
                     num_steps: int = 12) -> list[list[float]]:
  """Per learning-rate scale, the losses of `num_steps` Adam steps (lr 1e-3 times the scale) of
  `objective` from `init_state` (params, batch_stats, aux), each on the same `make_clips(rng)`
  batches and per-step pretext keys. Scale 0 keeps the queue and EMA dynamics with the network
  frozen: the baseline a short learning test compares against."""
  tx = optax.adam(1e-3)

  @jax.jit
  def step(params, batch_stats, aux, opt_state, clips, keys, i, lr_scale):
    def loss_fn(p):
      out = objective.loss(p, batch_stats, aux, {'clips': clips, 'keys': keys},
                           jax.random.key(1), i)
      return out.loss, (out.batch_stats, out.aux)
    (loss, (batch_stats, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, jax.tree.map(lambda u: lr_scale * u, updates))
    return params, batch_stats, objective.update_aux(params, aux, i), opt_state, loss

  runs = []
  for lr_scale in lr_scales:
    rng = np.random.default_rng(3)
    params, batch_stats, aux = init_state
    opt_state = tx.init(params)
    losses = []
    for i in range(num_steps):
      keys = jax.random.split(jax.random.fold_in(jax.random.key(7), i), batch)
      params, batch_stats, aux, opt_state, loss = step(
          params, batch_stats, aux, opt_state, make_clips(rng), keys, jnp.int32(i),
          jnp.float32(lr_scale))
      losses.append(float(loss))
    runs.append(losses)
  return runs


def restore_state(workdir: str, step: int):
  """The train state of `workdir`'s checkpoint at `step`, as nested dicts of arrays."""
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'),
                                  item_names=('state', 'data'))
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  manager.close()
  return state


def flatten(tree, prefix=''):
  """(path, array) pairs of a nested dict."""
  if isinstance(tree, dict):
    for key, value in tree.items():
      yield from flatten(value, f'{prefix}/{key}')
  else:
    yield prefix, np.asarray(tree)


def resume_matches_uninterrupted(config: ml_collections.ConfigDict, uninterrupted: str,
                                 resumed: str, aux_names: Sequence[str]) -> list:
  """Runs `config` in `resumed` from a copy of the uninterrupted run's step-CHECKPOINT_EVERY
  checkpoint and checks that the losses after it and the final aux entries `aux_names` equal the
  uninterrupted run's; returns the final aux of [uninterrupted, resumed]."""
  from cvrl_jax import trainer  # pylint: disable=g-import-not-at-top
  shutil.copytree(os.path.join(uninterrupted, 'checkpoints', str(CHECKPOINT_EVERY)),
                  os.path.join(resumed, 'checkpoints', str(CHECKPOINT_EVERY)))
  trainer.pretrain(config, resumed)
  after = range(CHECKPOINT_EVERY + 1, NUM_STEPS + 1)
  np.testing.assert_allclose(losses(resumed, after), losses(uninterrupted, after), rtol=1e-6)
  final = [restore_state(w, NUM_STEPS)['aux'] for w in (uninterrupted, resumed)]
  for name in aux_names:
    flat = [dict(flatten(f[name])) for f in final]
    assert flat[0].keys() == flat[1].keys()
    for key in flat[0]:
      np.testing.assert_allclose(flat[1][key], flat[0][key], rtol=1e-6, atol=1e-7,
                                 err_msg=f'{name}/{key}')
  return final
