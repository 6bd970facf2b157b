"""Host input pipelines on tf.data: DMVR TFRecords (or a TFDS video dataset) to uint8 clip batches.

The public builders of each job's pipeline; the pieces are `sources` (files, counts, TFRecord and
TFDS sources), `stream` (the resumable numbered stream, per-host split, keys, seeds, batching) and
`clips` (which frames are decoded, cropped and resized into each view).

Pretraining stream, in order:
  1. epochs e = start_epoch, start_epoch + 1, ...; each shuffles the file order and the records
     (shuffle buffer) with seeds derived from (seed, e), and numbers its records 0, 1, 2, ...;
  2. the start epoch skips the records already consumed (raw serialized records: nothing parsed);
  3. per-host split: 'files' (host h reads its own files h::H) or 'records' (all hosts read the
     same global stream; host h keeps its slice of each global batch, still before parsing);
  4. parse, sample clip starts, gather and JPEG-decode only the sampled frames (decode-and-crop,
     one random resized crop box per clip), resize, batch, prefetch.
Every random draw on the host is `tf.random.stateless_*` seeded by (seed, example key), so a
batch does not depend on parallelism, and a run resumed from `position` continues exactly.

Batches are dicts of NumPy arrays (docs/architecture.md, "Data contract"): 'video' uint8
[B_host, V, T, H, W, 3], 'label' int32 [B_host], 'key' uint32 [B_host, 2] and, in pretraining,
'position' int64 [2] = (epoch, records consumed in it) after this batch (in 'files' mode the
position is this host's own: save one per host); evaluation batches have 'mask' instead.

A truncated or corrupt TFRecord file stops the iterator with a ValueError naming the file. A
record that cannot be decoded is skipped and counted in pretraining (up to
data.max_bad_fraction) and stops evaluation naming it; evaluation also rejects labels outside
[0, data.num_classes) (cvrl_jax/data/records.py).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from cvrl_jax import config_lib
from cvrl_jax.data import clips
from cvrl_jax.data import plan as plan_lib
from cvrl_jax.data import records
from cvrl_jax.data import sampling
from cvrl_jax.data import sources
from cvrl_jax.data import stream as stream_lib

EVAL_MODES = ('train_clip', 'test_views', 'center_clip')


@dataclasses.dataclass(frozen=True)
class SoundWindows:
  """Audio-only evaluation input (config.eval.audio): windows of `num_samples` samples of tracks
  stored at `sample_rate`; `num_windows` of them per sound at test time (clips.sound_windows_fn)."""
  sample_rate: int
  num_samples: int
  num_windows: int


class DataIterator:
  """NumPy batches from a tf.data pipeline, with input errors as one clear ValueError."""

  def __init__(self, dataset: tf.data.Dataset, source, checks=None):
    self.dataset = dataset
    self.checks = checks  # records.SkipCounter or records.EvalChecks: bad records, labels
    self._source = source
    self._iterator = None

  def __iter__(self) -> 'DataIterator':
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._iterator is None:
      self._iterator = self.dataset.as_numpy_iterator()
    try:
      batch = next(self._iterator)
    except tf.errors.DataLossError as e:
      raise self._source.explain(e) from None
    except tf.errors.InvalidArgumentError as e:
      raise ValueError(f'Cannot read an example of {self._source.name}: '
                       f'{records.tf_error_text(e)}.') from None
    except tf.errors.OpError as e:  # e.g. a file deleted or made unreadable while it is read
      raise ValueError(f'Cannot read {self._source.name}: {records.tf_error_text(e)}.') from None
    return self.checks(batch) if self.checks is not None else batch


def _audio_fn(plan: plan_lib.ClipPlan, source):
  """The plan's audio windows fn (None for a frames-only plan), after checking that the source
  holds audio at the plan's rate."""
  if plan.audio is None:
    return None
  source.check_audio(plan.audio.sample_rate)
  return clips.audio_windows_fn(plan)


def make_pretrain_dataset(data_cfg, plan: plan_lib.ClipPlan, *, global_batch_size: int,
                          seed: int, start_position: Sequence[int] = (0, 0),
                          process_index: int | None = None,
                          process_count: int | None = None) -> tuple[tf.data.Dataset, Any]:
  """The pretraining tf.data pipeline and its source (see `make_pretrain_iterator`); its batches
  also carry records.FIELDS and 'skipped', which the iterator's records.SkipCounter consumes."""
  process_index, process_count = stream_lib.hosts(process_index, process_count)
  host_batch = stream_lib.host_batch(global_batch_size, process_count)
  plan = plan.resolve(data_cfg)

  source = sources.make_source(data_cfg, 'train', process_index=process_index,
                               process_count=process_count, host_split=data_cfg.host_split)
  source.check_readable()
  stream = stream_lib.raw_stream(source, seed=seed, start_position=start_position,
                                 num_epochs=None, shuffle=True,
                                 shuffle_buffer=data_cfg.shuffle_buffer)
  if data_cfg.host_split == 'records':
    stream = stream_lib.keep_host_slice(
        stream, global_batch=global_batch_size, host_batch=host_batch,
        process_index=process_index,
        start_count=stream_lib.start_count(source, start_position, process_index))
  else:
    stream = stream.map(lambda ex: dict(ex, position=tf.stack([ex['epoch'], ex['index'] + 1])))
  views_fn, shape = clips.plan_views_fn(plan, jpeg=source.jpeg)
  keep = plan.host_fields + (('fits',) if plan.short_videos == 'skip' else ())
  example_fn = clips.example_fn(
      source, views_fn, shape, seed=seed,
      key_fn=stream_lib.key_fn(data_cfg.host_split, process_index, process_count),
      keep_fields=keep, audio_fn=_audio_fn(plan, source))
  examples = records.skip_bad(records.guarded_map(stream, example_fn,
                                                  stream_lib.parallel(data_cfg)))
  return stream_lib.finish(examples, data_cfg, host_batch), source


def make_pretrain_iterator(data_cfg, plan: plan_lib.ClipPlan, *, global_batch_size: int,
                           seed: int, start_position: Sequence[int] = (0, 0),
                           process_index: int | None = None,
                           process_count: int | None = None) -> DataIterator:
  """Endless pretraining batches of the clip plan's views for this host (docs/objectives.md).

  Yields {'video': uint8 [B_host, V, T, H, W, 3], 'label': int32 [B_host], 'key': uint32
  [B_host, 2], 'position': int64 [2]} plus the plan's host fields (data/plan.py HOST_FIELDS) and,
  when the plan skips short videos, 'fits' bool [B_host] (False: shorter than the sampler's span;
  the objective leaves it out of its loss). V, T, H = W and the sampler come from the plan,
  resolved against data_cfg. Passing a batch's 'position' as `start_position` continues with
  the next batch exactly. Process index/count default to JAX's.
  """
  dataset, source = make_pretrain_dataset(
      data_cfg, plan, global_batch_size=global_batch_size, seed=seed,
      start_position=start_position, process_index=process_index, process_count=process_count)
  process_index, process_count = stream_lib.hosts(process_index, process_count)
  return DataIterator(dataset, source, records.SkipCounter(
      data_cfg, source, process_index=process_index, process_count=process_count))


def make_plan_eval_iterator(data_cfg, plan: plan_lib.ClipPlan, *, global_batch_size: int,
                            seed: int, max_examples: int = 0, process_index: int | None = None,
                            process_count: int | None = None) -> DataIterator:
  """One pass over data_cfg.eval_files cut by a pretraining clip plan: held-out tuples for the
  pretext-accuracy monitor. The same tuples every time (file order, fixed seed); the last
  batches are padded ('mask' False, as make_eval_iterator's). Each batch has the plan's fields
  and 'fits' (False for padding and for videos shorter than the plan's span). max_examples > 0:
  at most that many videos over all hosts."""
  process_index, process_count = stream_lib.hosts(process_index, process_count)
  host_batch = stream_lib.host_batch(global_batch_size, process_count)
  plan = plan.resolve(data_cfg)
  source = sources.make_source(data_cfg, 'eval', process_index=process_index,
                               process_count=process_count, host_split=data_cfg.host_split)
  source.check_readable()
  stream = stream_lib.raw_stream(source, seed=seed, start_position=(0, 0), num_epochs=1,
                                 shuffle=False, shuffle_buffer=data_cfg.shuffle_buffer)
  if max_examples > 0:
    per_host = max_examples if data_cfg.host_split == 'records' else math.ceil(
        max_examples / process_count)
    stream = stream.take(per_host)
  stream = stream_lib.with_padding(stream)
  if data_cfg.host_split == 'records':
    stream = stream_lib.keep_host_slice(stream, global_batch=global_batch_size,
                                        host_batch=host_batch, process_index=process_index)
    stream = stream.map(lambda ex: {k: v for k, v in ex.items() if k != 'position'})
  counts = source.host_counts(1)
  if max_examples > 0:
    counts = [min(c, max_examples) for c in counts]
  stream = stream.take(math.ceil(max(counts) / host_batch) * host_batch)
  views_fn, shape = clips.plan_views_fn(plan, jpeg=source.jpeg)
  specs = {name: (tf.as_dtype(dtype), shape[1:]) for name, (dtype, shape)
           in plan.field_shapes(1).items()}
  specs['fits'] = (tf.bool, ())
  example_fn = clips.example_fn(
      source, views_fn, shape, seed=seed,
      key_fn=stream_lib.key_fn(data_cfg.host_split, process_index, process_count),
      keep_fields=plan.host_fields + ('fits',), field_specs=specs,
      audio_fn=_audio_fn(plan, source))
  examples = stream.map(example_fn, num_parallel_calls=stream_lib.parallel(data_cfg),
                        deterministic=True)
  return DataIterator(stream_lib.finish(examples, data_cfg, host_batch), source)


def make_eval_dataset(data_cfg, *, split: str, mode: str, global_batch_size: int, seed: int,
                      num_epochs: int | None = 1, process_index: int | None = None,
                      process_count: int | None = None,
                      start_position: Sequence[int] = (0, 0),
                      sound: SoundWindows | None = None) -> tuple[tf.data.Dataset, Any]:
  """The evaluation tf.data pipeline and its source (see `make_eval_iterator`); its batches also
  carry records.FIELDS, which the iterator's records.EvalChecks consumes."""
  process_index, process_count = stream_lib.hosts(process_index, process_count)
  host_batch = stream_lib.host_batch(global_batch_size, process_count)
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f'num_epochs must be None (endless) or >= 1; got {num_epochs}.')
  if num_epochs is not None and tuple(start_position) != (0, 0):
    raise ValueError('Only an endless evaluation stream (num_epochs=None) starts at a position.')
  source = sources.make_source(data_cfg, split, process_index=process_index,
                               process_count=process_count, host_split=data_cfg.host_split)
  d = data_cfg
  if sound is not None:
    if mode not in EVAL_MODES:
      raise ValueError(f'Unknown evaluation mode {mode!r}; expected one of {EVAL_MODES}.')
    views_fn, shape = clips.sound_windows_fn(mode=mode, num_samples=sound.num_samples,
                                             num_windows=sound.num_windows)
  elif mode == 'train_clip':
    clip_len, stride = int(d.eval_num_frames), int(d.eval_frame_stride)
    views_fn, shape = clips.random_clips_fn(
        starts_fn=lambda s, n: sampling.uniform_start(s, n, clip_len, stride), num_clips=1,
        clip_len=clip_len, stride=stride, size=int(d.eval_image_size),
        area_range=config_lib.CVRL_CROP_AREA_RANGE,
        aspect_range=config_lib.CVRL_CROP_ASPECT_RANGE, jpeg=source.jpeg)
  elif mode == 'test_views':
    if d.eval_crop_size > d.eval_resize:
      raise ValueError(f'data.eval_crop_size ({d.eval_crop_size}) must not exceed '
                       f'data.eval_resize ({d.eval_resize}).')
    views_fn, shape = clips.test_views_fn(
        num_temporal=int(d.eval_num_temporal_views), num_spatial=int(d.eval_num_spatial_views),
        clip_len=int(d.eval_num_frames), stride=int(d.eval_frame_stride),
        resize=int(d.eval_resize), crop=int(d.eval_crop_size), jpeg=source.jpeg)
  elif mode == 'center_clip':
    if d.eval_image_size > d.eval_resize:
      raise ValueError(f'data.eval_image_size ({d.eval_image_size}) must not exceed '
                       f'data.eval_resize ({d.eval_resize}).')
    views_fn, shape = clips.center_clip_fn(
        clip_len=int(d.eval_num_frames), stride=int(d.eval_frame_stride),
        resize=int(d.eval_resize), size=int(d.eval_image_size), jpeg=source.jpeg)
  else:
    raise ValueError(f'Unknown evaluation mode {mode!r}; expected one of {EVAL_MODES}.')

  source.check_readable()
  if sound is not None:
    source.check_audio(sound.sample_rate)
  stream = stream_lib.raw_stream(source, seed=seed, start_position=start_position,
                                 num_epochs=num_epochs, shuffle=num_epochs != 1,
                                 shuffle_buffer=d.shuffle_buffer)
  stream = stream_lib.with_padding(stream) if num_epochs is not None else stream.map(
      lambda ex: dict(ex, valid=tf.constant(True)))
  if d.host_split == 'records':
    stream = stream_lib.keep_host_slice(
        stream, global_batch=global_batch_size, host_batch=host_batch,
        process_index=process_index,
        start_count=stream_lib.start_count(source, start_position, process_index))
    if num_epochs is not None:
      stream = stream.map(lambda ex: {k: v for k, v in ex.items() if k != 'position'})
  elif num_epochs is None:  # endless: this host's own position, as in pretraining
    stream = stream.map(lambda ex: dict(ex, position=tf.stack([ex['epoch'], ex['index'] + 1])))
  else:  # every host yields as many batches as the host with the most data
    num_batches = math.ceil(max(source.host_counts(num_epochs)) / host_batch)
    stream = stream.take(num_batches * host_batch)
  key_fn = stream_lib.key_fn(d.host_split, process_index, process_count)
  if sound is not None:
    example_fn = clips.sound_example_fn(source, views_fn, shape, sample_rate=sound.sample_rate,
                                        seed=seed, key_fn=key_fn)
  else:
    example_fn = clips.example_fn(source, views_fn, shape, seed=seed, key_fn=key_fn)
  examples = records.guarded_map(stream, example_fn, stream_lib.parallel(d))
  return stream_lib.finish(examples, d, host_batch), source


def make_eval_iterator(data_cfg, *, split: str, mode: str, global_batch_size: int, seed: int,
                       num_epochs: int | None = 1, process_index: int | None = None,
                       process_count: int | None = None,
                       start_position: Sequence[int] = (0, 0),
                       skip_bad_records: bool = False,
                       sound: SoundWindows | None = None) -> DataIterator:
  """Evaluation batches for this host.

  Modes: 'train_clip' (one random clip of data_cfg.eval_num_frames at eval_frame_stride, random
  resized crop with area 0.3-1 and aspect 0.5-2 to eval_image_size: linear-probe training),
  'test_views' (eval_num_temporal_views x eval_num_spatial_views views, temporal-major: frames
  resized to short side eval_resize, square crops of eval_crop_size), 'center_clip' (the centred
  clip, short side eval_resize, centre crop eval_image_size: kNN memory banks).

  Yields {'video': uint8 [B_host, V, T, H, W, 3], 'label', 'key', 'mask': bool [B_host]}. With
  num_epochs=1 the examples are read in file order and every example appears exactly once over
  all hosts; the last batches are padded (zeros, label 0, key 0xFFFFFFFF twice, mask False), and
  every host yields the same number of batches. num_epochs=None repeats endlessly, reshuffled,
  and its batches also carry 'position' (as in pretraining): passing one as `start_position`
  continues with the next batch exactly (evaluation jobs resume their training this way).

  With `sound` (audio-only records, `convert --audio-only`) batches hold 'audio' float32
  [B_host, V, A] instead of 'video': one random window per sound in 'train_clip', the
  sound's `num_windows` evenly spaced windows in the other two modes (clips.sound_windows_fn).
  """
  dataset, source = make_eval_dataset(
      data_cfg, split=split, mode=mode, global_batch_size=global_batch_size, seed=seed,
      num_epochs=num_epochs, process_index=process_index, process_count=process_count,
      start_position=start_position, sound=sound)
  return DataIterator(dataset, source,
                      records.EvalChecks(data_cfg, source, skip_bad=skip_bad_records))

