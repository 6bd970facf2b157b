"""The objective contract's host side: the sampler table, clip plans, the ordered samplers'
guarantees and spans, and the host fields and short-video policy through the real pipeline.

The synthetic videos are flat grey frames (frame i has value 10 + 5 i), so every output frame
tells which stored frame it came from (as in test_data_pipeline.py).
"""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cvrl_jax import config_lib
from cvrl_jax.data import dmvr
from cvrl_jax.data import pipeline
from cvrl_jax.data import plan as plan_lib
from cvrl_jax.data import sampling

LENGTHS = [70, 64, 63, 90, 20, 120, 65, 100]  # VCOP needs 64: videos 2 and 4 are too short
NUM_DRAWS = 2000


def _draw(fn, num=NUM_DRAWS):
  seeds = tf.stack([tf.range(num, dtype=tf.int64), tf.zeros([num], tf.int64)], axis=1)
  dataset = tf.data.Dataset.from_tensor_slices(seeds).map(fn, num_parallel_calls=2).batch(num)
  return next(dataset.as_numpy_iterator())


def test_sampler_table_names_and_orderings():
  assert set(sampling.SAMPLERS) == {'cvrl_pair', 'rho', 'same_start', 'consecutive', 'ordered',
                                    'temporal_negative', 'spread'}
  orderings = {name: s.ordering for name, s in sampling.SAMPLERS.items()}
  assert orderings == {'cvrl_pair': 'unordered', 'rho': 'unordered', 'same_start': 'same_start',
                       'consecutive': 'ordered', 'ordered': 'ordered',
                       'temporal_negative': 'unordered', 'spread': 'ordered'}
  with pytest.raises(ValueError, match="unknown sampler 'pairs'; choose one of"):
    sampling.get_sampler('pairs')


def test_plans_resolve_against_config_data_and_validate():
  cfg = config_lib.data_config()
  plan = plan_lib.simple_plan('cvrl_pair', 2).resolve(cfg)
  assert plan.clip_shape == (2, 16, 224, 224, 3)  # config.data's 16 frames of 224
  assert plan.sampler_params == {'power': 1.0}  # from data.sampling_power
  assert plan.min_length is None and plan.ordering == 'unordered'
  cfg.rho_max_distance = 7
  assert plan_lib.simple_plan('rho', 3).resolve(cfg).sampler_params == {'max_distance': 7}
  vcop = plan_lib.ClipPlan('consecutive', (plan_lib.ViewSpec('none', 16, 1, 112),) * 3,
                           {'gap': 8}).resolve(cfg)
  assert vcop.min_length == 64  # VCOP: 3 x 16 frames, 8 apart
  bad = [
      (plan_lib.simple_plan('cvrl_pair', 3), "'cvrl_pair' sampler makes 2 clips"),
      (plan_lib.simple_plan('consecutive', 3, gap=-1), "gap must be >= 0"),
      (plan_lib.simple_plan('consecutive', 3, spacing=2), "has no parameter 'spacing'"),
      (plan_lib.simple_plan('ordered', 3, min_gap=4, max_gap=2), 'min_gap <= max_gap'),
      (plan_lib.simple_plan('rho', 2, crop_area_range=(0.0, 1.0)), '0 < low <= high <= 1'),
      (plan_lib.ClipPlan('rho', (plan_lib.ViewSpec('none', 4), plan_lib.ViewSpec('none', 8))),
       'must share their frames'),
      (plan_lib.ClipPlan('rho', (plan_lib.ViewSpec('sepia'),)), "unknown augmentation policy"),
      (plan_lib.ClipPlan('rho', (plan_lib.ViewSpec('none'),), host_fields=('flow',)),
       "unknown host field 'flow'"),
      (plan_lib.ClipPlan('rho', (plan_lib.ViewSpec('none'),), short_videos='pad'),
       'short_videos must be one of'),
  ]
  for plan, message in bad:
    with pytest.raises(ValueError, match=message):
      plan.resolve(cfg)


@pytest.mark.parametrize('length', [64, 65, 100])
def test_consecutive_starts_are_vcops_tuples(length):
  starts = _draw(lambda s: sampling.consecutive_starts(s, length, 3, 16, 1, gap=8))
  np.testing.assert_array_equal(np.diff(starts, axis=1), 24)  # 16 frames + 8 between
  assert starts[:, 0].min() == 0 and starts[:, 0].max() == length - 64  # every placement
  assert starts[:, -1].max() + 15 == length - 1  # the last clip ends inside the video
  counts = np.bincount(starts[:, 0], minlength=length - 63)
  if length > 64:  # uniform placement
    assert counts.min() > 0.5 * NUM_DRAWS / (length - 63)


def test_ordered_starts_increase_with_gaps_in_range():
  starts = _draw(lambda s: sampling.ordered_starts(s, 200, 5, 1, 1, min_gap=3, max_gap=30))
  gaps = np.diff(starts, axis=1)
  assert gaps.min() == 3 and gaps.max() == 30  # the whole range, nothing outside it
  assert starts.min() >= 0 and starts.max() <= 199
  # A video too short for the drawn gaps: gaps shrink, the order holds while it has min_length.
  span = sampling.ordered_span(5, 1, 1, 3)
  assert span == 13
  short = _draw(lambda s: sampling.ordered_starts(s, span, 5, 1, 1, min_gap=3, max_gap=30))
  assert np.diff(short, axis=1).min() >= 3 and short.max() <= span - 1


def _flat_video(length):
  def jpeg(value):
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(buffer, format='JPEG',
                                                                quality=95)
    return buffer.getvalue()
  return [jpeg(min(10 + 2 * i, 255)) for i in range(length)]


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('plan') / 'train.tfrecord')
  dmvr.write_shard(path, [dmvr.make_sequence_example(_flat_video(n), v, data_path=f'v{v}')
                          for v, n in enumerate(LENGTHS)])
  return path


def test_pipeline_follows_the_plan_with_host_fields_and_skips(files):
  cfg = config_lib.data_config()
  cfg.train_files = files
  cfg.num_frames, cfg.frame_stride, cfg.image_size, cfg.shuffle_buffer = 16, 1, 8, 8
  cfg.host_split = 'records'
  plan = plan_lib.ClipPlan(
      'consecutive', (plan_lib.ViewSpec('none', crop_area_range=(1.0, 1.0),
                                        crop_aspect_range=(1.0, 1.0)),) * 3,
      {'gap': 8}, short_videos='skip',
      host_fields=tuple(f for f in plan_lib.HOST_FIELDS if f not in plan_lib.AUDIO_FIELDS))
  iterator = pipeline.make_pretrain_iterator(cfg, plan, global_batch_size=8, seed=0,
                                             process_index=0, process_count=1)
  epochs = [next(iterator), next(iterator)]
  for batch in epochs:
    assert batch['video'].shape == (8, 3, 16, 8, 8, 3)
    lengths = np.array(LENGTHS)[batch['label']]
    np.testing.assert_array_equal(batch['video_length'], lengths)
    np.testing.assert_array_equal(batch['fits'], lengths >= 64)
    frames = np.rint((batch['video'].reshape(8, 3, 16, -1).mean(-1) - 10) / 2).astype(int)
    fits = batch['fits']
    # The frames are the clips that view_starts names, 16 consecutive frames each, in order.
    expected = batch['view_starts'][..., None] + np.arange(16)
    np.testing.assert_array_equal(frames[fits], expected[fits])
    np.testing.assert_array_equal(np.diff(batch['view_starts'][fits], axis=1), 24)
    np.testing.assert_array_equal(batch['crop_boxes'][:, :, 2:], 16)  # whole 16 x 16 frames
  # The video id follows the video through the reshuffled second epoch; the key does not.
  ids = [{tuple(i): int(l) for i, l in zip(b['video_id'], b['label'])} for b in epochs]
  assert ids[0] == ids[1] and len(ids[0]) == len(LENGTHS)
  assert epochs[0]['key'][:, 0].tolist() == [0] * 8 and epochs[1]['key'][:, 0].tolist() == [1] * 8


def test_shared_crop_gives_every_view_the_first_views_box(files):
  cfg = config_lib.data_config()
  cfg.train_files = files
  cfg.num_frames, cfg.frame_stride, cfg.image_size, cfg.shuffle_buffer = 1, 1, 8, 8
  cfg.host_split = 'records'
  boxes = {}
  for shared in (False, True):
    view = plan_lib.ViewSpec('none', crop_area_range=(0.3, 0.6))
    plan = plan_lib.ClipPlan('ordered', (view,) * 4, {'min_gap': 2, 'max_gap': 5},
                             host_fields=('crop_boxes',), shared_crop=shared)
    batch = next(pipeline.make_pretrain_iterator(cfg, plan, global_batch_size=8, seed=0,
                                                 process_index=0, process_count=1))
    boxes[shared] = batch['crop_boxes']  # [8, 4, 4]
  np.testing.assert_array_equal(boxes[True], np.repeat(boxes[True][:, :1], 4, axis=1))
  assert np.any(boxes[False] != boxes[False][:, :1])  # independent boxes differ
  np.testing.assert_array_equal(boxes[True][:, 0], boxes[False][:, 0])  # view 0 draws the same
