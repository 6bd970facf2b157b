"""Each evaluation job end to end on tiny demo data (R3D-18 at width 1/8, 2 frames of 16 x 16).

The encoder is an exported backbone with random (non-trivial) weights, except where the empty
init_checkpoint (the random-initialisation baseline) is the thing under test.
"""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

import eval_numpy
from cvrl_jax import config_lib
from cvrl_jax import export
from cvrl_jax import models
from cvrl_jax import sharding
from cvrl_jax.data import demo
from cvrl_jax.data import pipeline
from cvrl_jax.evaluate import finetune
from cvrl_jax.evaluate import knn
from cvrl_jax.evaluate import linear

NUM_TRAIN, NUM_TEST = 40, 20  # not multiples of the batch: the last batches are padded


def tiny_model_config():
  model = config_lib.model_config()
  model.depth = 18
  model.width_multiplier = 0.125
  model.dtype = 'float32'
  model.conv_impl = 'conv3d'  # compiles faster on CPU than the default there, 'factorized'
  return model


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  return demo.make_demo_dataset(str(tmp_path_factory.mktemp('data')), num_train=NUM_TRAIN,
                                num_test=NUM_TEST, num_frames=6, canvas=32, seed=0,
                                num_train_shards=2, num_test_shards=1)


@pytest.fixture(scope='module')
def encoder_path(tmp_path_factory):
  """An exported tiny backbone with He-initialised kernels and identity BatchNorm (what a random
  initialisation gives, without compiling one). Its features are well spread, so nearest
  neighbours are not decided by float rounding."""
  model_cfg = tiny_model_config()
  abstract = export.abstract_variables(models.build_backbone(model_cfg),
                                       jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['scale']") or name.endswith("['var']"):
      return jnp.ones(leaf.shape, leaf.dtype)
    if name.endswith("['bias']") or name.endswith("['mean']"):
      return jnp.zeros(leaf.shape, leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return jnp.asarray(rng.normal(size=leaf.shape) * np.sqrt(2.0 / fan_in), leaf.dtype)

  variables = jax.tree_util.tree_map_with_path(fill, abstract)
  return export.export_backbone(str(tmp_path_factory.mktemp('encoder') / 'backbone'), variables,
                                model_cfg)


def job_config(data, job, init_checkpoint='', steps=4):
  c = config_lib.base_config()
  c.job = job
  c.init_checkpoint = init_checkpoint
  c.data.train_files = data['train']
  c.data.eval_files = data['test']
  c.data.num_classes = 10
  c.data.shuffle_buffer = 64
  c.data.eval_num_frames = 2
  c.data.eval_image_size = 16
  c.data.eval_resize = 16
  c.data.eval_crop_size = 16
  c.data.eval_num_temporal_views = 2  # 2 x 1 test views: the view average is exercised
  c.data.eval_num_spatial_views = 1
  c.model = tiny_model_config()
  c.batch_size = 16
  c.eval.batch_size = 16
  c.num_train_steps = steps
  c.log_every_steps = 1
  c.optim.warmup_epochs = 0.0
  c.optim.weight_decay = 0.0
  return c


def read_results(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def read_scalars(workdir, tag):
  """[(step, value)] of a TensorBoard scalar the job wrote."""
  values = []
  for name in tf.io.gfile.listdir(workdir):
    if 'tfevents' in name:
      for event in tf.compat.v1.train.summary_iterator(os.path.join(workdir, name)):
        for v in event.summary.value:
          if v.tag == tag:
            values.append((event.step, float(tf.make_ndarray(v.tensor))))
  return sorted(values)


@functools.lru_cache(maxsize=None)
def _loaded_apply(path):
  backbone, variables, _ = export.load_backbone(path)
  return jax.jit(lambda v, x: backbone.apply(v, x, train=False)), variables


def independent_features(path, config, split, mode):
  """Features [N, C] (mean over views) and labels of a split, computed without the job's code:
  one device, no sharding, padding dropped by hand."""
  apply, variables = _loaded_apply(path)
  feats, labels = [], []
  for batch in pipeline.make_eval_iterator(config.data, split=split, mode=mode,
                                           global_batch_size=16, seed=0, num_epochs=1):
    video = batch['video']
    clips = jnp.asarray(video.reshape((-1,) + video.shape[2:]), jnp.float32) / 255.0
    f = np.asarray(apply(variables, clips)).reshape(video.shape[0], video.shape[1], -1).mean(1)
    feats.append(f[batch['mask']])
    labels.append(batch['label'][batch['mask']])
  return np.concatenate(feats), np.concatenate(labels)


def test_knn_eval_matches_numpy_on_independent_features(data, encoder_path, tmp_path):
  config = job_config(data, 'knn_eval', encoder_path)
  results = knn.knn_eval(config, str(tmp_path))
  assert read_results(str(tmp_path)) == pytest.approx(results)
  assert results['knn/num_train_videos'] == NUM_TRAIN and results['knn/num_test_videos'] == NUM_TEST

  train_x, train_y = independent_features(encoder_path, config, 'train', 'test_views')
  test_x, test_y = independent_features(encoder_path, config, 'eval', 'test_views')
  assert results['knn/top1'] == pytest.approx(
      eval_numpy.knn_top1(test_x, test_y, train_x, train_y, 10, 200, 0.07))
  expected = eval_numpy.retrieval(test_x, test_y, train_x, train_y, knn.RETRIEVAL_KS)
  for k in knn.RETRIEVAL_KS:
    assert results[f'retrieval/top{k}'] == pytest.approx(expected[k]), k
  # 50 > 40 train videos: the whole bank is retrieved, so a hit is a class present in train.
  assert results['retrieval/top50'] == pytest.approx(np.mean(np.isin(test_y, train_y)))


def test_online_monitor_reads_the_backbone_of_a_train_state(data, encoder_path):
  config = job_config(data, 'pretrain')
  config.knn_every_steps = 1
  config.eval.monitor_max_examples = 16  # one batch of each split
  mesh = sharding.make_mesh(config.mesh)
  _, variables, _ = export.load_backbone(encoder_path, mesh=mesh)  # the state lives on the mesh
  state = type('State', (), {'params': {'backbone': variables['params'], 'projector': {}},
                             'batch_stats': {'backbone': variables['batch_stats']}})()
  values = knn.make_online_monitor(config, mesh, None, '')(1, state)

  train_x, train_y = independent_features(encoder_path, config, 'train', 'center_clip')
  test_x, test_y = independent_features(encoder_path, config, 'eval', 'center_clip')
  train_x, train_y, test_x, test_y = train_x[:16], train_y[:16], test_x[:16], test_y[:16]
  assert values['monitor/knn_top1'] == pytest.approx(
      eval_numpy.knn_top1(test_x, test_y, train_x, train_y, 10, 200, 0.07))
  assert values['monitor/retrieval_top5'] == pytest.approx(
      eval_numpy.retrieval(test_x, test_y, train_x, train_y, (5,))[5])


@pytest.mark.parametrize('standardize', [False, True])
def test_linear_eval_on_cached_features_fits_the_training_set(data, encoder_path, tmp_path,
                                                              standardize):
  config = job_config(data, 'linear_eval', encoder_path, steps=300)
  config.eval.linear_cached_features = True
  config.eval.linear_standardize = standardize
  config.optim.base_lr = 2.0
  config.optim.base_batch_size = 16
  results = linear.linear_eval(config, str(tmp_path))
  assert set(results) == {f'linear_cached_features/{k}' for k in
                          ('top1', 'top5', 'num_test_videos', 'train_loss', 'train_top1')}
  assert results['linear_cached_features/num_test_videos'] == NUM_TEST
  # The probe fits the cached training features: loss far below chance (ln 10 = 2.3).
  assert results['linear_cached_features/train_loss'] < 0.5 * np.log(10)
  assert results['linear_cached_features/train_top1'] > 0.5
  assert results['linear_cached_features/top1'] <= results['linear_cached_features/top5'] <= 1.0


@pytest.mark.parametrize('standardize', [False, True])
def test_linear_eval_recipe_learns_on_augmented_clips(data, encoder_path, tmp_path, standardize):
  config = job_config(data, 'linear_eval', encoder_path, steps=12)
  # Standardised features have unit variance per dimension (norm about sqrt(C), not 1): the
  # same LR is a C times larger step, so the standardised probe gets a smaller one.
  config.optim.base_lr = 1.0 if standardize else 32.0
  config.eval.linear_standardize = standardize
  results = linear.linear_eval(config, str(tmp_path))
  assert results == pytest.approx(read_results(str(tmp_path)))
  assert results['linear/num_test_videos'] == NUM_TEST
  losses = read_scalars(str(tmp_path), 'loss')
  assert [s for s, _ in losses] == list(range(1, 13))
  assert np.mean([v for _, v in losses[-3:]]) < losses[0][1]


def test_finetune_learns(data, encoder_path, tmp_path):
  config = job_config(data, 'finetune', encoder_path, steps=32)
  config.optim.base_lr = 0.05
  config.optim.base_batch_size = 16
  config.eval.finetune_dropout = 0.0
  results = finetune.finetune(config, str(tmp_path))
  assert results == pytest.approx(read_results(str(tmp_path)))
  assert results['finetune/num_test_videos'] == NUM_TEST
  assert 0.0 <= results['finetune/top1'] <= results['finetune/top5'] <= 1.0
  losses = [v for _, v in read_scalars(str(tmp_path), 'loss')]
  assert len(losses) == 32 and np.mean(losses[-8:]) < np.mean(losses[:8])


def test_evaluation_workdir_must_not_be_the_pretraining_run(data, encoder_path):
  config = job_config(data, 'knn_eval', encoder_path)
  with pytest.raises(ValueError, match='is the init_checkpoint itself'):
    knn.knn_eval(config, encoder_path)
