"""Host input pipelines: batch contract, sampled frames, crops, host splits, determinism, resume,
evaluation views and coverage, and every bad input.

The synthetic videos make the sampled frames checkable: frame i of every video is a flat grey
image of value 10 + 5 i, so each output frame tells which stored frame it came from, and the
label of video v is v.
"""
import io
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cvrl_jax import config_lib
from cvrl_jax.data import clips as clips_lib
from cvrl_jax.data import dmvr
from cvrl_jax.data import pipeline
from cvrl_jax.data import plan as plan_lib
from cvrl_jax.data import sources
from cvrl_jax.data import stream as stream_lib

LENGTHS = [5, 9, 12, 20, 33, 40, 14, 26, 7, 18]  # frames of videos 0..9
FILE_SPLIT = 7  # videos 0-6 in one file, 7-9 in the other
HEIGHT, WIDTH = 24, 32
CROP = dict(crop_area_range=(0.3, 1.0), crop_aspect_range=(0.5, 2.0))


def _jpeg(array, **kwargs) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='JPEG', quality=95, **kwargs)
  return buffer.getvalue()


def _flat_video(length):
  return [_jpeg(np.full((HEIGHT, WIDTH, 3), 10 + 5 * i, np.uint8)) for i in range(length)]


def _frame_indices(clips):
  """Stored frame index of every output frame [..., T, H, W, 3] -> [..., T]."""
  return np.rint((clips.reshape(clips.shape[:-3] + (-1,)).mean(-1) - 10) / 5).astype(int)


@pytest.fixture(scope='module')
def flat_files(tmp_path_factory):
  folder = tmp_path_factory.mktemp('flat')
  examples = [dmvr.make_sequence_example(_flat_video(n), v, data_path=f'v{v}')
              for v, n in enumerate(LENGTHS)]
  paths = [str(folder / 'a.tfrecord'), str(folder / 'b.tfrecord')]
  dmvr.write_shard(paths[0], examples[:FILE_SPLIT])
  dmvr.write_shard(paths[1], examples[FILE_SPLIT:])
  return paths


def _cfg(files, **overrides):
  cfg = config_lib.data_config()
  cfg.train_files = cfg.eval_files = ','.join(files)
  cfg.num_frames, cfg.frame_stride, cfg.image_size, cfg.shuffle_buffer = 4, 2, 16, 16
  cfg.eval_num_frames, cfg.eval_frame_stride, cfg.eval_image_size = 4, 3, 16
  cfg.eval_resize, cfg.eval_crop_size = HEIGHT, 16
  for key, value in overrides.items():
    setattr(cfg, key, value)
  return cfg


def _pretrain(cfg, num_batches, *, batch=4, seed=0, hosts=(0, 1), start=(0, 0), clips=2,
              sampler='cvrl_pair'):
  iterator = pipeline.make_pretrain_iterator(
      cfg, plan_lib.simple_plan(sampler, clips, **CROP), global_batch_size=batch, seed=seed,
      start_position=start, process_index=hosts[0], process_count=hosts[1])
  return [next(iterator) for _ in range(num_batches)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ------------------------------------------------------------------------------------------------
# Pretraining batches.


def test_pretrain_batches_follow_the_contract_and_the_sampler(flat_files):
  cfg = _cfg(flat_files)
  batches = _pretrain(cfg, 5)
  first = batches[0]
  assert first['video'].dtype == np.uint8 and first['video'].shape == (4, 2, 4, 16, 16, 3)
  assert first['label'].dtype == np.int32 and first['label'].shape == (4,)
  assert first['key'].dtype == np.uint32 and first['key'].shape == (4, 2)
  assert first['position'].dtype == np.int64 and first['position'].shape == (2,)
  span = (cfg.num_frames - 1) * cfg.frame_stride
  for batch in batches:
    for video, label in zip(batch['video'], batch['label']):
      length = LENGTHS[label]
      indices = _frame_indices(video)  # [2, T]
      starts = indices[:, 0]
      np.testing.assert_array_equal(
          indices, (starts[:, None] + cfg.frame_stride * np.arange(cfg.num_frames)) % length)
      if length > span:  # both clips fit: no wrap-around, starts among the M positions
        assert starts.max() < length - span
  # The 20 examples of batches 0-4 are two shuffled epochs over the 10 videos.
  keys = np.concatenate([b['key'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  for epoch in (0, 1):
    in_epoch = keys[:, 0] == epoch
    np.testing.assert_array_equal(np.sort(keys[in_epoch, 1]), np.arange(10))
    assert sorted(labels[in_epoch]) == list(range(10))
  assert list(labels[:10]) != list(labels[10:])  # each epoch reshuffles
  positions = [tuple(b['position']) for b in batches]
  assert positions == [(0, 4), (0, 8), (1, 2), (1, 6), (1, 10)]


def test_rho_sampler_clips_and_max_distance(flat_files):
  cfg = _cfg(flat_files, rho_max_distance=3)
  (batch,) = _pretrain(cfg, 1, batch=10, clips=3, sampler='rho')
  assert batch['video'].shape == (10, 3, 4, 16, 16, 3)
  for video, label in zip(batch['video'], batch['label']):
    starts = _frame_indices(video)[:, 0]
    if LENGTHS[label] > 6:
      assert starts.max() - starts.min() <= 3


def test_one_crop_box_per_clip(tmp_path):
  rng = np.random.default_rng(0)
  texture = np.asarray(Image.fromarray((rng.random((12, 16, 3)) * 255).astype(np.uint8)).resize(
      (WIDTH * 2, HEIGHT * 2), Image.BILINEAR))
  path = str(tmp_path / 'texture.tfrecord')
  dmvr.write_shard(path, [dmvr.make_sequence_example([_jpeg(texture)] * 12, v) for v in range(4)])
  (batch,) = _pretrain(_cfg([path]), 1)
  video = batch['video'].astype(int)  # [4, 2, T, 16, 16, 3]
  # Every frame of a clip has the same crop: identical frames stay identical.
  assert np.abs(video - video[:, :, :1]).max() == 0
  # Each clip has its own box.
  assert all(np.abs(v[0, 0] - v[1, 0]).mean() > 5 for v in video)


@pytest.mark.parametrize('subsampling', [0, 2])
def test_decode_and_crop_matches_decode_then_crop(subsampling):
  """Our decode-and-crop vs the reference design: decode the whole frame, slice, resize."""
  rng = np.random.default_rng(1)
  image = np.asarray(Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).resize(
      (160, 120), Image.BILINEAR))
  encoded = tf.constant([_jpeg(image, subsampling=subsampling)] * 2)
  seed = tf.constant([4, 2], tf.int64)
  ours = clips_lib.random_resized_crop_clip(
      encoded, seed, jpeg=True, size=32, area_range=(0.3, 1.0), aspect_range=(0.5, 2.0))
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      [120, 160, 3], tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed, min_object_covered=0.1,
      aspect_ratio_range=(0.5, 2.0), area_range=(0.3, 1.0), max_attempts=100,
      use_image_if_no_bounding_boxes=True)
  frames = tf.map_fn(lambda f: tf.io.decode_jpeg(f, channels=3), encoded,
                     fn_output_signature=tf.uint8)
  cropped = tf.slice(frames, tf.concat([[0], begin], 0), tf.concat([[-1], size], 0))
  reference = np.floor(tf.image.resize(cropped, [32, 32]).numpy() + 0.5)
  area = float(size[0] * size[1]) / (120 * 160)
  assert 0.3 <= area <= 1.0 and size[0] < 120  # a real crop, within the area range
  error = np.abs(ours.numpy().astype(int) - reference)
  if subsampling == 0:
    assert error.max() == 0
  else:  # 4:2:0 chroma: libjpeg's cropped decode differs only along the crop's edge columns
    assert error.mean() < 0.5


# ------------------------------------------------------------------------------------------------
# Determinism, resume and the per-host split.


def test_same_seed_same_stream_other_seed_other_stream(flat_files):
  cfg = _cfg(flat_files)
  run = _pretrain(cfg, 3)
  _assert_same(run, _pretrain(cfg, 3))
  other = _pretrain(cfg, 3, seed=1)
  assert not np.array_equal(run[0]['video'], other[0]['video'])


@pytest.mark.parametrize('host_split', ['files', 'records'])
def test_resume_from_a_position_continues_exactly(flat_files, host_split):
  cfg = _cfg(flat_files, host_split=host_split)
  run = _pretrain(cfg, 6)
  for n in (1, 2):  # batch 2 ends in epoch 1 after a batch that crossed the epoch boundary
    resumed = _pretrain(cfg, 5 - n, start=tuple(run[n]['position']))
    _assert_same(run[n + 1:], resumed)


def test_records_split_global_batch_is_identical_for_any_host_count(flat_files):
  cfg = _cfg(flat_files, host_split='records')
  single = _pretrain(cfg, 4, batch=4)
  hosts = [_pretrain(cfg, 4, batch=4, hosts=(h, 2)) for h in range(2)]
  for step, whole in enumerate(single):
    parts = [hosts[h][step] for h in range(2)]
    for key in ('video', 'label', 'key'):
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
    # Each host's position is after its own last record: the last host's ends the global batch.
    np.testing.assert_array_equal(parts[-1]['position'], whole['position'])
    assert tuple(parts[0]['position']) < tuple(whole['position'])
  # Two hosts resume from the global batch's end and still rebuild the 1-host batches.
  resumed = [_pretrain(cfg, 2, batch=4, hosts=(h, 2), start=tuple(single[1]['position']))
             for h in range(2)]
  for step in range(2):
    np.testing.assert_array_equal(
        np.concatenate([resumed[h][step]['video'] for h in range(2)]), single[step + 2]['video'])


def test_files_split_reads_disjoint_files_with_unique_keys(flat_files):
  cfg = _cfg(flat_files)
  hosts = [_pretrain(cfg, 2, batch=4, hosts=(h, 2)) for h in range(2)]
  labels = [set(np.concatenate([b['label'] for b in hosts[h]]).tolist()) for h in range(2)]
  assert labels[0] <= set(range(FILE_SPLIT)) and labels[1] <= set(range(FILE_SPLIT, 10))
  keys = [{tuple(k) for b in hosts[h] for k in b['key']} for h in range(2)]
  assert not keys[0] & keys[1]
  assert {k[0] % 2 for k in keys[1]} == {1}  # host index folded into the first word
  with pytest.raises(ValueError, match='2 file.*3 hosts'):
    _pretrain(cfg, 1, batch=6, hosts=(0, 3))


# ------------------------------------------------------------------------------------------------
# Evaluation.


def _eval(cfg, mode, *, batch=4, hosts=(0, 1), num_epochs=1, split='eval'):
  return list(pipeline.make_eval_iterator(
      cfg, split=split, mode=mode, global_batch_size=batch, seed=0, num_epochs=num_epochs,
      process_index=hosts[0], process_count=hosts[1]))


@pytest.mark.parametrize('host_split', ['files', 'records'])
def test_eval_covers_every_example_once_over_hosts(flat_files, host_split):
  cfg = _cfg(flat_files, host_split=host_split)
  per_host = [_eval(cfg, 'center_clip', batch=4, hosts=(h, 2)) for h in range(2)]
  assert len(per_host[0]) == len(per_host[1])  # every host runs the same number of steps
  seen = []
  for batches in per_host:
    for batch in batches:
      assert batch['video'].shape == (2, 1, 4, 16, 16, 3) and batch['mask'].dtype == bool
      seen.extend(batch['label'][batch['mask']].tolist())
      assert not batch['video'][~batch['mask']].any()
      assert (batch['key'][~batch['mask']] == stream_lib.PAD_KEY).all()
  assert sorted(seen) == list(range(10))
  if host_split == 'records':  # in file order, 3 global batches of 4 (2 padding rows)
    assert len(per_host[0]) == 3
  else:  # the host with 7 videos needs 4 batches of 2; the other pads to match
    assert len(per_host[0]) == 4


def test_test_views_match_an_independent_computation(flat_files, tmp_path):
  # Frames with a horizontal ramp, so the 3 spatial crops differ; frame i adds 5 i.
  ramp = np.linspace(0, 60, WIDTH)[None, :, None]
  frames = [np.clip(10 + 5 * i + ramp + np.zeros((HEIGHT, WIDTH, 3)), 0, 255).astype(np.uint8)
            for i in range(30)]
  path = str(tmp_path / 'ramp.tfrecord')
  dmvr.write_shard(path, [dmvr.make_sequence_example([_jpeg(f) for f in frames], 0)])
  cfg = _cfg([path], eval_num_temporal_views=5, eval_num_spatial_views=3)
  (batch,) = _eval(cfg, 'test_views', batch=1)
  views = batch['video'][0].astype(int)  # [15, T, 16, 16, 3]
  assert views.shape == (15, 4, 16, 16, 3)
  decoded = [np.asarray(Image.open(io.BytesIO(_jpeg(f)))).astype(int) for f in frames]
  starts = np.linspace(0, max(0, 30 - 4 * 3), 5).astype(int)  # spec: linspace(0, L - T s, n)
  for t, start in enumerate(starts):
    for s, x in enumerate([0, (WIDTH - 16) // 2, WIDTH - 16]):  # start, centre, end of width
      expected = np.stack([decoded[(start + 3 * i) % 30][4:20, x:x + 16] for i in range(4)])
      assert np.abs(views[t * 3 + s] - expected).max() <= 2, (t, s)


def test_center_clip_and_train_clip(flat_files):
  cfg = _cfg(flat_files, eval_resize=36, eval_image_size=32)
  batches = _eval(cfg, 'center_clip', batch=10)
  (batch,) = batches
  for video, label in zip(batch['video'], batch['label']):
    length = LENGTHS[label]
    start = max(0, length - 12) // 2
    np.testing.assert_array_equal(_frame_indices(video[0]), (start + 3 * np.arange(4)) % length)
  cfg = _cfg(flat_files)
  stream = pipeline.make_eval_iterator(cfg, split='train', mode='train_clip', global_batch_size=4,
                                       seed=0, num_epochs=None, process_index=0, process_count=1)
  for _ in range(3):
    batch = next(stream)
    assert batch['video'].shape == (4, 1, 4, 16, 16, 3) and batch['mask'].all()
    for video, label in zip(batch['video'], batch['label']):
      indices = _frame_indices(video[0])
      np.testing.assert_array_equal(indices, (indices[0] + 3 * np.arange(4)) % LENGTHS[label])


def test_eval_resize_matches_tensorflow_resize(tmp_path):
  rng = np.random.default_rng(2)
  frame = np.asarray(Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8)).resize(
      (WIDTH, HEIGHT), Image.BILINEAR))
  encoded = _jpeg(frame, subsampling=0)
  path = str(tmp_path / 'one.tfrecord')
  dmvr.write_shard(path, [dmvr.make_sequence_example([encoded] * 4, 0)])
  cfg = _cfg([path], eval_resize=36, eval_image_size=32)
  (batch,) = _eval(cfg, 'center_clip', batch=1)
  resized = tf.image.resize(tf.io.decode_jpeg(encoded)[None], [36, 48])[0]
  expected = np.floor(resized.numpy() + 0.5)[2:34, 8:40]
  np.testing.assert_array_equal(batch['video'][0, 0, 0], expected)


# ------------------------------------------------------------------------------------------------
# Counting.


def test_count_records_reads_or_uses_the_converter_summary(flat_files):
  assert sources.count_records(flat_files) == 10
  folder = os.path.dirname(flat_files[0])
  shards = {os.path.basename(p): {'records': 70 if p.endswith('a.tfrecord') else 3,
                                  'bytes': os.path.getsize(p)} for p in flat_files}
  summary = os.path.join(folder, 'train' + dmvr.SUMMARY_SUFFIX)
  with open(summary, 'w') as f:
    json.dump({'shards': shards}, f)
  try:
    assert sources.count_records(flat_files) == 73  # the summary is trusted when sizes match
    shards['a.tfrecord']['bytes'] += 1
    with open(summary, 'w') as f:
      json.dump({'shards': shards}, f)
    assert sources.count_records(flat_files) == 10  # a size mismatch: read the file
  finally:
    os.remove(summary)
  cfg = _cfg(flat_files)
  assert sources.num_examples(cfg, 'eval') == 10
  cfg.num_train_examples = 1234
  assert sources.num_examples(cfg, 'train') == 1234


# ------------------------------------------------------------------------------------------------
# Bad input.


@pytest.fixture
def broken_files(flat_files, tmp_path):
  data = open(flat_files[0], 'rb').read()
  truncated = tmp_path / 'truncated.tfrecord'
  truncated.write_bytes(data[:len(data) * 2 // 3])
  corrupt = bytearray(data)
  corrupt[len(data) // 2] ^= 0xFF
  (tmp_path / 'corrupt.tfrecord').write_bytes(bytes(corrupt))
  return {'truncated': str(truncated), 'corrupt': str(tmp_path / 'corrupt.tfrecord')}


@pytest.mark.parametrize('kind', ['truncated', 'corrupt'])
def test_damaged_tfrecord_names_the_file(flat_files, broken_files, kind):
  cfg = _cfg([flat_files[1], broken_files[kind]])
  message = f'TFRecord file {broken_files[kind]} is truncated or corrupt'
  with pytest.raises(ValueError, match=message):
    _pretrain(cfg, 4)
  with pytest.raises(ValueError, match=broken_files[kind]):
    sources.count_records([flat_files[1], broken_files[kind]])


def test_data_of_records_without_frames_stops_naming_the_file(tmp_path):
  """Every record bad: pretraining stops at once (the first exceeds data.max_bad_fraction of one
  epoch) naming the file; cvrl_jax/data/records.py, tests/test_data_bad_records.py."""
  path = str(tmp_path / 'empty_video.tfrecord')
  example = tf.train.SequenceExample()
  example.context.feature['clip/label/index'].int64_list.value.append(0)
  example.feature_lists.feature_list['image/encoded']  # pylint: disable=pointless-statement
  dmvr.write_shard(path, [example.SerializeToString()] * 4)
  with pytest.raises(ValueError, match=re.escape(f'worst file is {path} (1 bad record, the first '
                                                 'is record 0)')):
    _pretrain(_cfg([path]), 1)


def test_bad_arguments_are_clear_errors(flat_files, tmp_path):
  cfg = _cfg(flat_files)
  with pytest.raises(FileNotFoundError, match="'/nowhere/\\*.tfrecord'"):
    _pretrain(_cfg([flat_files[0], '/nowhere/*.tfrecord']), 1)
  with pytest.raises(ValueError, match='batch size 5 .* hosts \\(2\\)'):
    _pretrain(cfg, 1, batch=5, hosts=(0, 2))
  with pytest.raises(ValueError, match="unknown sampler 'pairs'"):
    _pretrain(cfg, 1, sampler='pairs')
  with pytest.raises(ValueError, match="'cvrl_pair' sampler makes 2 clips"):
    _pretrain(cfg, 1, clips=3)
  with pytest.raises(ValueError, match='Unknown evaluation mode'):
    _eval(cfg, 'ten_crop')
  with pytest.raises(ValueError, match='No eval data'):
    _eval(_cfg([], eval_files=''), 'center_clip')
  empty = str(tmp_path / 'empty.tfrecord')
  dmvr.write_shard(empty, [])
  with pytest.raises(ValueError, match='hold no records'):
    _pretrain(_cfg([empty]), 1)
