"""VTDL and CATE through the real trainer on the demo videos: host fields reach the loss, and
VTDL's key encoder and queue survive a checkpoint and an exact resume."""

import numpy as np

from cvrl_jax import config_lib
from cvrl_jax import trainer
import train_testlib as lib
from train_testlib import env  # noqa: F401  (the module fixture)



def _config(data_dir, name, **extra):
  config = config_lib.load_config_file(name, data_dir)
  overrides = {k: v for k, v in lib.OVERRIDES.items() if not k.startswith('objective.')}
  for key, value in {**overrides, **extra}.items():
    *parents, leaf = key.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def test_vtdl_resume_restores_key_encoder_and_queue(env, tmp_path_factory):  # noqa: F811
  extra = {'objective.queue_size': 24, 'objective.head_output_dim': 16}
  uninterrupted = str(tmp_path_factory.mktemp('vtdl_uninterrupted'))
  results = trainer.pretrain(_config(env.data, 'vtdl_demo', **extra), uninterrupted)
  assert results['step'] == lib.NUM_STEPS
  distance = lib.read_scalars(uninterrupted, 'train/temporal_negative_distance')
  assert min(distance.values()) > 2  # the host's view_starts reached the loss

  resumed = str(tmp_path_factory.mktemp('vtdl_resumed'))
  final = lib.resume_matches_uninterrupted(_config(env.data, 'vtdl_demo', **extra), uninterrupted, resumed,
                                           ('queue', 'queue_ptr', 'target'))
  assert int(final[0]['queue_ptr']) == lib.NUM_STEPS * 16 % 24


def test_cate_trains_from_the_pipelines_host_fields(env, tmp_path_factory):  # noqa: F811
  workdir = str(tmp_path_factory.mktemp('cate'))
  config = _config(env.data, 'cate_demo', num_train_steps=2,
                   **{'objective.head_hidden_dim': 16, 'objective.head_output_dim': 16,
                      'objective.head_num_heads': 2})
  results = trainer.pretrain(config, workdir)
  assert results['step'] == 2
  losses = lib.losses(workdir, [1, 2])
  assert np.isfinite(losses).all() and (losses > 0).all()
