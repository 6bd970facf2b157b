"""rho-family runs through the real pipeline and trainer on demo videos (8 fake CPU devices).

- The rho sampler gives rho = 1, 2, 3 clips per video as the objectives declare them.
- A rho-MoCo run resumed from its step-3 checkpoint reproduces the uninterrupted run: the same
  losses, and the same momentum encoder, key-encoder BN statistics, queue and queue pointer.
"""
import os
import types

import numpy as np
import pytest

from cvrl_jax import trainer
from cvrl_jax.data import pipeline
from cvrl_jax.objectives import build_objective
import rho_testlib
import train_testlib as lib

# Small enough to wrap the queue: 16 videos x 2 clips = 32 keys a step into 64 rows.
MOCO_OVERRIDES = {'objective.queue_size': 64}


def _config(data_dir, method='rho_moco', **extra):
  config = rho_testlib.demo_config(method, data_dir)
  method_overrides = MOCO_OVERRIDES if method == 'rho_moco' else {}
  for key, value in {**lib.OVERRIDES, **method_overrides, **extra}.items():
    *parents, leaf = key.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  base = tmp_path_factory.getbasetemp()
  cache = str(base / 'jax_cache')
  os.makedirs(cache, exist_ok=True)
  data = lib.make_demo_data(str(base / 'demo_data'))
  previous = lib.enable_compile_cache(cache)
  yield types.SimpleNamespace(cache=cache, data=data)
  lib.restore_compile_cache(previous)


@pytest.mark.parametrize('rho', [1, 2, 3])
def test_rho_sampler_shapes(env, rho):
  """rho clips per video through the real pipeline, each from its own start; rho = 1 (the paper's
  ablation without temporal persistence) is two views of the same frames."""
  config = _config(env.data, 'rho_byol', **{'objective.rho': rho})
  plan = build_objective(config).plan
  num_views = max(rho, 2)
  assert (plan.num_views, plan.sampler) == (num_views, 'rho' if rho > 1 else 'same_start')
  batches = pipeline.make_pretrain_iterator(
      config.data, plan.replace_views(crop_area_range=(1.0, 1.0), crop_aspect_range=(1.0, 1.0)),
      global_batch_size=8, seed=0, process_index=0, process_count=1)  # full frames: views
  # differ only in time
  video = next(batches)['video']
  assert video.shape == (8, num_views, config.data.num_frames, 32, 32, 3)
  assert video.dtype == np.uint8
  differs = [np.mean(np.any(video[:, 0] != video[:, v], axis=(1, 2, 3, 4)))
             for v in range(1, num_views)]
  if rho == 1:
    assert differs == [0.0]  # same start, and full-frame crops: identical frames
  else:
    assert min(differs) > 0.5


def test_moco_resume_restores_momentum_encoder_and_queue(env, tmp_path_factory):
  uninterrupted = str(tmp_path_factory.mktemp('moco_uninterrupted'))
  results = trainer.pretrain(_config(env.data), uninterrupted)
  assert results['step'] == lib.NUM_STEPS

  resumed = str(tmp_path_factory.mktemp('moco_resumed'))
  final = lib.resume_matches_uninterrupted(_config(env.data), uninterrupted, resumed,
                                           ('queue', 'queue_ptr', 'target'))
  momentum = lib.read_scalars(uninterrupted, 'train/momentum')
  assert momentum[1] == pytest.approx(0.994) and momentum[lib.NUM_STEPS] > momentum[1]
  assert int(final[0]['queue_ptr']) == lib.NUM_STEPS * 32 % 64
  middle = lib.restore_state(uninterrupted, lib.CHECKPOINT_EVERY)['aux']
  assert not np.allclose(middle['queue'], final[0]['queue'])  # the queue moved on after step 3
