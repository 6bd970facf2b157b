"""Host input pipelines on tf.data: DMVR TFRecords (or a TFDS video dataset) to uint8 clip batches.

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

A truncated or corrupt TFRecord file stops the iterator with a ValueError naming the file.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from cvrl_jax.data import dmvr
from cvrl_jax.data import sampling

AUTOTUNE = tf.data.AUTOTUNE
MAX_CYCLE_LENGTH = 16  # TFRecord files read in parallel
PAD_KEY = np.iinfo(np.uint32).max
_NO_FRAMES_MESSAGE = 'A record has no frames (its image/encoded feature list is empty).'
# Salts separating the seed streams derived from the run seed.
_FILE_ORDER, _RECORD_ORDER, _EXAMPLE = 1, 2, 3
_WHOLE_IMAGE = ((0.0, 0.0, 1.0, 1.0),)

EVAL_MODES = ('train_clip', 'test_views', 'center_clip')


# ------------------------------------------------------------------------------------------------
# Files and counts.


def resolve_files(patterns: str) -> list[str]:
  """Sorted files matching comma-separated glob patterns; each pattern must match something.

  Patterns go through tf.io.gfile, so cloud paths (gs://...) work as well as local ones.
  """
  files = set()
  for pattern in (p.strip() for p in patterns.split(',')):
    if not pattern:
      continue
    matched = tf.io.gfile.glob(os.path.expanduser(pattern))
    if not matched:
      raise FileNotFoundError(f'No files match the data pattern {pattern!r}.')
    files.update(matched)
  if not files:
    raise ValueError(f'The data pattern {patterns!r} names no files.')
  return sorted(files)


def _summary_counts(folder: str) -> dict[str, tuple[int, int]]:
  """{shard name: (records, bytes)} from the summaries the converter wrote in `folder`."""
  counts = {}
  for path in tf.io.gfile.glob(os.path.join(folder, '*' + dmvr.SUMMARY_SUFFIX)):
    try:
      with tf.io.gfile.GFile(path) as f:
        shards = json.load(f).get('shards', {})
      counts.update({name: (s['records'], s['bytes']) for name, s in shards.items()})
    except (OSError, ValueError, KeyError, TypeError, tf.errors.OpError):
      continue  # Not one of ours: count those shards by reading them.
  return counts


def corrupt_file_error(path: str, error: tf.errors.OpError) -> ValueError:
  return ValueError(f'TFRecord file {path} is truncated or corrupt ({error.message.strip()}).')


def _read_count(path: str) -> int:
  try:
    return int(tf.data.TFRecordDataset(path).reduce(np.int64(0), lambda n, _: n + 1))
  except tf.errors.DataLossError as e:
    raise corrupt_file_error(path, e) from e


def count_records(files: Sequence[str]) -> int:
  """Number of records in TFRecord files.

  Uses the converter's summary (per-shard counts, trusted when the file size matches) and reads
  the other files through.
  """
  summaries = {}
  total = 0
  for path in files:
    folder = os.path.dirname(path)
    if folder not in summaries:
      summaries[folder] = _summary_counts(folder)
    known = summaries[folder].get(os.path.basename(path))
    if known is not None and known[1] == tf.io.gfile.stat(path).length:
      total += known[0]
    else:
      total += _read_count(path)
  return total


def find_corrupt_file(files: Sequence[str]) -> str | None:
  """The first file in `files` that TensorFlow cannot read through, or None."""
  for path in files:
    try:
      _read_count(path)
    except ValueError:
      return path
  return None


def num_examples(data_cfg, split: str) -> int:
  """Examples in the 'train' or 'eval' split (data_cfg.num_train_examples wins when > 0)."""
  if split == 'train' and data_cfg.num_train_examples > 0:
    return int(data_cfg.num_train_examples)
  source = _make_source(data_cfg, split, process_index=0, process_count=1, host_split='records')
  return source.host_counts(1)[0]


# ------------------------------------------------------------------------------------------------
# Sources: a stream of raw examples per epoch, numbered in epoch order.


def _seed_pair(seed: int, *salts) -> tf.Tensor:
  pair = tf.constant([seed & 0x7FFFFFFF, (seed >> 31) & 0x7FFFFFFF], tf.int64)
  for salt in salts:
    pair = tf.random.experimental.stateless_fold_in(pair, tf.cast(salt, tf.int64))
  return pair


def _record_order_seed(seed: int, epoch: tf.Tensor) -> tf.Tensor:
  """int64 seed of the record shuffle buffer of one epoch."""
  return tf.random.stateless_uniform([], _seed_pair(seed, _RECORD_ORDER, epoch), minval=None,
                                     maxval=None, dtype=tf.int64)


class _TFRecordSource:
  """DMVR TFRecord files. An element's 'record' is one serialized SequenceExample."""

  jpeg = True

  def __init__(self, files: list[str], hosts_files: list[list[str]], name: str):
    self.files = files  # the files this host reads
    self.name = name
    self._hosts_files = hosts_files

  def epoch(self, epoch: tf.Tensor, seed: int, shuffle: bool,
            shuffle_buffer: int) -> tf.data.Dataset:
    files = tf.constant(self.files)
    if shuffle:
      files = tf.random.experimental.stateless_shuffle(files, _seed_pair(seed, _FILE_ORDER, epoch))
    records = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(self.files), MAX_CYCLE_LENGTH),
        block_length=1, num_parallel_calls=AUTOTUNE, deterministic=True)
    if shuffle:
      records = records.shuffle(shuffle_buffer, seed=_record_order_seed(seed, epoch))
    return records.map(lambda r: {'record': r})

  @staticmethod
  def parse(element: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    parsed = dmvr.parse_sequence_example(element['record'], frames_only=True)
    return {'frames': parsed['frames'], 'label': parsed['label']}

  def host_counts(self, repeats: int) -> list[int]:
    return [repeats * count_records(files) for files in self._hosts_files]

  def check_readable(self) -> None:
    """Fails early if there is nothing to read (an epoch without records would never end)."""
    for path in self.files:
      try:
        if any(True for _ in tf.data.TFRecordDataset(path).take(1)):
          return
      except tf.errors.DataLossError as e:
        raise corrupt_file_error(path, e) from e
    raise ValueError(f'The files of {self.name} hold no records.')

  def explain(self, error: tf.errors.DataLossError) -> ValueError:
    bad = find_corrupt_file(self.files)
    return corrupt_file_error(bad if bad is not None else f'one of the files of {self.name}', error)


class _TFDSSource:
  """A TFDS video dataset with 'video' (encoded frames) and 'label' features."""

  def __init__(self, name: str, split: str, data_dir: str, process_index: int, process_count: int,
               by_files: bool):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self.name = f'TFDS dataset {name!r} split {split!r}'
    try:
      self._builder = tfds.builder(name, data_dir=data_dir or None)
      self._builder.info.splits[split]  # pylint: disable=pointless-statement
    except Exception as e:  # TFDS raises several types for unknown or unprepared datasets.
      raise ValueError(f'Cannot open {self.name} (data_dir {data_dir!r}): {e}') from e
    features = self._builder.info.features
    if 'video' not in features or 'label' not in features:
      raise ValueError(f'{self.name} needs "video" and "label" features; it has {list(features)}.')
    self.jpeg = getattr(features['video'], 'encoding_format', None) == 'jpeg' or (
        getattr(getattr(features['video'], 'feature', None), 'encoding_format', None) == 'jpeg')
    # 'files' split: each host reads an even share of the examples (TFDS's own JAX split).
    self._host_splits = [
        tfds.split_for_jax_process(split, process_index=h, process_count=process_count)
        for h in range(process_count)] if by_files else [split] * process_count
    self._split = self._host_splits[process_index]
    self._data = self._builder.as_dataset(
        split=self._split, shuffle_files=False,
        decoders={'video': tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(interleave_cycle_length=1, try_autocache=False))

  def epoch(self, epoch: tf.Tensor, seed: int, shuffle: bool,
            shuffle_buffer: int) -> tf.data.Dataset:
    # The encoded frames travel as one string so that every source's element is scalar.
    data = self._data.map(lambda ex: {
        'record': tf.io.serialize_tensor(ex['video']), 'label': tf.cast(ex['label'], tf.int32)})
    if shuffle:
      data = data.shuffle(shuffle_buffer, seed=_record_order_seed(seed, epoch))
    return data

  @staticmethod
  def parse(element: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return {'frames': tf.io.parse_tensor(element['record'], tf.string), 'label': element['label']}

  def host_counts(self, repeats: int) -> list[int]:
    return [repeats * self._builder.info.splits[s].num_examples for s in self._host_splits]

  def check_readable(self) -> None:
    if not self._builder.info.splits[self._split].num_examples:
      raise ValueError(f'{self.name} has no examples for this host.')

  def explain(self, error: tf.errors.DataLossError) -> ValueError:
    return ValueError(f'A file of {self.name} is truncated or corrupt ({error.message.strip()}).')


def _make_source(data_cfg, split: str, *, process_index: int, process_count: int,
                 host_split: str):
  if split not in ('train', 'eval'):
    raise ValueError(f"The split must be 'train' or 'eval'; got {split!r}.")
  if host_split not in ('files', 'records'):
    raise ValueError(f"data.host_split must be 'files' or 'records'; got {host_split!r}.")
  patterns = data_cfg.train_files if split == 'train' else data_cfg.eval_files
  if patterns:
    files = resolve_files(patterns)
    if host_split == 'records':
      hosts_files = [files] * process_count
    else:
      if len(files) < process_count:
        raise ValueError(
            f"{len(files)} file(s) match {patterns!r} but {process_count} hosts read them; "
            "use data.host_split='records' or write more shards.")
      hosts_files = [files[h::process_count] for h in range(process_count)]
    return _TFRecordSource(hosts_files[process_index], hosts_files, f'data pattern {patterns!r}')
  if data_cfg.tfds_name:
    tfds_split = data_cfg.tfds_train_split if split == 'train' else data_cfg.tfds_eval_split
    return _TFDSSource(data_cfg.tfds_name, tfds_split, data_cfg.tfds_data_dir, process_index,
                       process_count, by_files=host_split == 'files')
  which = 'train_files' if split == 'train' else 'eval_files'
  raise ValueError(f'No {split} data: set data.{which} (TFRecord globs) or data.tfds_name.')


# ------------------------------------------------------------------------------------------------
# The raw stream: epochs of numbered records, the per-host split, keys and seeds.


def _raw_stream(source, *, seed: int, start_position: Sequence[int], num_epochs: int | None,
                shuffle: bool, shuffle_buffer: int) -> tf.data.Dataset:
  """Elements: the source's raw fields plus 'epoch' and 'index' (position in the epoch)."""
  start_epoch, start_offset = (int(v) for v in start_position)
  if start_epoch < 0 or start_offset < 0:
    raise ValueError(f'start_position must be non-negative; got {tuple(start_position)}.')
  end_epoch = np.iinfo(np.int64).max if num_epochs is None else num_epochs

  def epoch_records(epoch):
    records = source.epoch(epoch, seed, shuffle, shuffle_buffer).enumerate()
    skip = tf.where(epoch == start_epoch, tf.constant(start_offset, tf.int64), 0)
    return records.skip(skip).map(lambda index, ex: dict(ex, epoch=epoch, index=index))

  return tf.data.Dataset.range(start_epoch, end_epoch).flat_map(epoch_records)


def _with_padding(stream: tf.data.Dataset) -> tf.data.Dataset:
  """Marks elements valid and appends an endless run of invalid padding elements."""
  spec = stream.element_spec
  pad = {k: tf.constant('') if s.dtype == tf.string else tf.zeros(s.shape, s.dtype)
         for k, s in spec.items()}
  pad['valid'] = tf.constant(False)
  valid = stream.map(lambda ex: dict(ex, valid=tf.constant(True)))
  return valid.concatenate(tf.data.Dataset.from_tensors(pad).repeat())


def _end_position(batch: Mapping[str, tf.Tensor]) -> tf.Tensor:
  """(epoch, index + 1) of the last real element of a batch."""
  last = -1
  if 'valid' in batch:
    last = tf.reduce_sum(tf.cast(batch['valid'], tf.int32)) - 1
  return tf.stack([batch['epoch'][last], batch['index'][last] + 1])


def _keep_host_slice(stream: tf.data.Dataset, *, global_batch: int, host_batch: int,
                     process_index: int) -> tf.data.Dataset:
  """'records' split: host h keeps its slice of each global batch, before any parsing.

  Other hosts' records are blanked before batching, so the global batch costs little memory.
  Every kept element carries 'position', the stream position after its global batch.
  """
  lo, hi = process_index * host_batch, (process_index + 1) * host_batch

  def blank_others(n, ex):
    slot = n % global_batch
    mine = tf.logical_and(slot >= lo, slot < hi)
    return dict(ex, record=tf.where(mine, ex['record'], ''))

  batches = stream.enumerate().map(blank_others).batch(global_batch, drop_remainder=True)
  if 'valid' in stream.element_spec:
    batches = batches.take_while(lambda batch: batch['valid'][0])

  def host_part(batch):
    part = {k: v[lo:hi] for k, v in batch.items()}
    part['position'] = tf.tile(_end_position(batch)[None], [host_batch, 1])
    return tf.data.Dataset.from_tensor_slices(part)

  return batches.flat_map(host_part)


def _key_fn(host_split: str, process_index: int, process_count: int):
  """Example key (uint32 [2]): (epoch, index), with the host folded in for 'files' splits."""
  def key(ex):
    first = ex['epoch']
    if host_split == 'files':
      first = first * process_count + process_index
    return tf.cast(tf.stack([first, ex['index']]), tf.uint32)
  return key


def _example_seed(seed: int, key: tf.Tensor) -> tf.Tensor:
  return _seed_pair(seed, _EXAMPLE, tf.cast(key[0], tf.int64), tf.cast(key[1], tf.int64))


# ------------------------------------------------------------------------------------------------
# Frames: decode only what is used.


def _frame_shape(encoded: tf.Tensor, jpeg: bool) -> tf.Tensor:
  """[height, width, channels] of an encoded frame (from the header alone for JPEG)."""
  if jpeg:
    return tf.image.extract_jpeg_shape(encoded)
  return tf.shape(tf.io.decode_image(encoded, channels=3, expand_animations=False))


def _decode(encoded: tf.Tensor, jpeg: bool, window: tf.Tensor | None = None) -> tf.Tensor:
  """Decodes frames tf.string [N] to uint8 [N, h, w, 3], cropped to window (y, x, h, w) if given.

  JPEG frames with a window are cropped inside the decoder, which skips the rows outside it.
  """
  def one(frame):
    if jpeg and window is not None:
      return tf.io.decode_and_crop_jpeg(frame, window, channels=3)
    if jpeg:
      image = tf.io.decode_jpeg(frame, channels=3)
    else:
      image = tf.io.decode_image(frame, channels=3, expand_animations=False)
    if window is not None:
      image = image[window[0]:window[0] + window[2], window[1]:window[1] + window[3]]
    return image
  return tf.map_fn(one, encoded, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def _resize(frames: tf.Tensor, size) -> tf.Tensor:
  """Bilinear resize of uint8 frames [N, h, w, 3] to `size` (height, width), rounded to uint8."""
  resized = tf.image.resize(frames, size, method='bilinear')
  # Bilinear weights are convex, so values stay in [0, 255]: +0.5 and truncation rounds.
  return tf.cast(resized + 0.5, tf.uint8)


def _resize_short_side(frames: tf.Tensor, short_side: int) -> tf.Tensor:
  """Resizes frames [N, h, w, 3] so that min(h, w) = short_side (no-op if it already is)."""
  shape = tf.shape(frames)[1:3]
  short = tf.reduce_min(shape)

  def resize():
    scale = short_side / tf.cast(short, tf.float32)
    return _resize(frames, tf.cast(tf.round(tf.cast(shape, tf.float32) * scale), tf.int32))

  return tf.cond(short == short_side, lambda: frames, resize)


def _random_resized_crop_clip(encoded: tf.Tensor, seed: tf.Tensor, *, jpeg: bool, size: int,
                              area_range: Sequence[float],
                              aspect_range: Sequence[float]) -> tf.Tensor:
  """One clip: a single random box for all its frames (decode-and-crop), resized to size x size.

  The box is drawn like tf.image.sample_distorted_bounding_box (min_object_covered 0.1,
  100 attempts, whole frame as fallback), statelessly.
  """
  begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      _frame_shape(encoded[0], jpeg), bounding_boxes=tf.constant([_WHOLE_IMAGE], tf.float32),
      seed=seed, min_object_covered=0.1, aspect_ratio_range=tuple(aspect_range),
      area_range=tuple(area_range), max_attempts=100, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], box_size[0], box_size[1]])
  return _resize(_decode(encoded, jpeg, window), [size, size])


def _random_clips_fn(*, starts_fn, num_clips: int, clip_len: int, stride: int, size: int,
                     area_range, aspect_range, jpeg: bool):
  """Views fn: `num_clips` clips at sampled starts, each with its own random resized crop."""
  def views(frames, seed):
    temporal_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    length = tf.size(frames)
    indices = sampling.clip_indices(starts_fn(temporal_seed, length), clip_len, stride, length)
    crop_seeds = tf.random.experimental.stateless_split(crop_seed, num_clips)
    clips = [_random_resized_crop_clip(tf.gather(frames, indices[v]), crop_seeds[v], jpeg=jpeg,
                                       size=size, area_range=area_range, aspect_range=aspect_range)
             for v in range(num_clips)]
    return tf.stack(clips)
  return views, (num_clips, clip_len, size, size, 3)


def _test_views_fn(*, num_temporal: int, num_spatial: int, clip_len: int, stride: int,
                   resize: int, crop: int, jpeg: bool):
  """Views fn: temporal x spatial test views, temporal-major ([t0s0, t0s1, ..., t1s0, ...])."""
  def views(frames, seed):
    del seed
    length = tf.size(frames)
    starts = sampling.eval_temporal_starts(length, num_temporal, clip_len, stride)
    indices = tf.reshape(sampling.clip_indices(starts, clip_len, stride, length), [-1])
    # Test clips overlap in all but long videos: decode each stored frame once.
    unique, position = tf.unique(indices)
    decoded = _resize_short_side(_decode(tf.gather(frames, unique), jpeg), resize)
    decoded = tf.gather(decoded, position)
    height, width = tf.shape(decoded)[1], tf.shape(decoded)[2]
    decoded = tf.reshape(decoded, [num_temporal, clip_len, height, width, 3])
    offsets = sampling.eval_spatial_offsets(height, width, crop, num_spatial)
    crops = [decoded[:, :, offsets[s, 0]:offsets[s, 0] + crop, offsets[s, 1]:offsets[s, 1] + crop]
             for s in range(num_spatial)]
    views = tf.stack(crops, axis=1)  # [temporal, spatial, T, crop, crop, 3]
    return tf.reshape(views, [num_temporal * num_spatial, clip_len, crop, crop, 3])
  return views, (num_temporal * num_spatial, clip_len, crop, crop, 3)


def _center_clip_fn(*, clip_len: int, stride: int, resize: int, size: int, jpeg: bool):
  """Views fn: the centred clip, short side resized to `resize`, centre crop of `size`."""
  def views(frames, seed):
    del seed
    length = tf.size(frames)
    indices = sampling.clip_indices(sampling.center_start(length, clip_len, stride), clip_len,
                                    stride, length)[0]
    decoded = _resize_short_side(_decode(tf.gather(frames, indices), jpeg), resize)
    offset = sampling.eval_spatial_offsets(tf.shape(decoded)[1], tf.shape(decoded)[2], size, 1)[0]
    return decoded[None, :, offset[0]:offset[0] + size, offset[1]:offset[1] + size]
  return views, (1, clip_len, size, size, 3)


def _example_fn(source, views_fn, video_shape, *, seed: int, key_fn):
  """Raw element -> {'video', 'label', 'key'} (+ 'position', 'mask' when the element has them)."""
  def process(ex):
    parsed = source.parse(ex)
    key = key_fn(ex)
    frames = parsed['frames']
    with tf.control_dependencies([tf.debugging.assert_positive(tf.size(frames),
                                                               message=_NO_FRAMES_MESSAGE)]):
      video = views_fn(frames, _example_seed(seed, key))
    return {'video': tf.ensure_shape(video, video_shape), 'label': parsed['label'], 'key': key}

  def pad(ex):
    return {'video': tf.zeros(video_shape, tf.uint8), 'label': tf.constant(0, tf.int32),
            'key': tf.constant([PAD_KEY, PAD_KEY], tf.uint32)}

  def fn(ex):
    if 'valid' in ex:
      out = tf.cond(ex['valid'], lambda: process(ex), lambda: pad(ex))
      out['mask'] = ex['valid']
    else:
      out = process(ex)
    if 'position' in ex:
      out['position'] = ex['position']
    return out
  return fn


# ------------------------------------------------------------------------------------------------
# Public pipelines.


class DataIterator:
  """NumPy batches from a tf.data pipeline, with input errors as one clear ValueError."""

  def __init__(self, dataset: tf.data.Dataset, source):
    self.dataset = dataset
    self._source = source
    self._iterator = None

  def __iter__(self) -> 'DataIterator':
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._iterator is None:
      self._iterator = self.dataset.as_numpy_iterator()
    try:
      return next(self._iterator)
    except tf.errors.DataLossError as e:
      raise self._source.explain(e) from None
    except tf.errors.InvalidArgumentError as e:
      raise ValueError(f'Cannot read an example of {self._source.name}: {e.message.strip()}') from e


def _hosts(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is not in [0, {process_count}).')
  return process_index, process_count


def _host_batch(global_batch_size: int, process_count: int) -> int:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f'The global batch size {global_batch_size} must be a positive multiple of '
                     f'the number of hosts ({process_count}).')
  return global_batch_size // process_count


def _parallel(data_cfg) -> int:
  return AUTOTUNE if data_cfg.num_parallel_calls < 0 else int(data_cfg.num_parallel_calls)


def _finish(examples: tf.data.Dataset, data_cfg, host_batch: int) -> tf.data.Dataset:
  """Batch per host, one position per batch, prefetch, deterministic options."""
  batches = examples.batch(host_batch, drop_remainder=True)
  if 'position' in examples.element_spec:
    batches = batches.map(lambda b: dict(b, position=b['position'][-1]))
  options = tf.data.Options()
  options.deterministic = True
  options.autotune.enabled = True
  return batches.prefetch(data_cfg.prefetch if data_cfg.prefetch > 0 else AUTOTUNE).with_options(
      options)


def _check_range(name: str, values: Sequence[float], low: float,
                 high: float) -> tuple[float, float]:
  values = tuple(float(v) for v in values)
  if len(values) != 2 or not low <= values[0] <= values[1] <= high:
    raise ValueError(f'{name} must be (min, max) with {low} <= min <= max <= {high}; got {values}.')
  return values


def make_pretrain_dataset(data_cfg, *, num_clips: int, sampler: str,
                          crop_area_range: Sequence[float], crop_aspect_range: Sequence[float],
                          global_batch_size: int, seed: int,
                          start_position: Sequence[int] = (0, 0), process_index: int | None = None,
                          process_count: int | None = None) -> tuple[tf.data.Dataset, Any]:
  """The pretraining tf.data pipeline and its source (see `make_pretrain_iterator`)."""
  process_index, process_count = _hosts(process_index, process_count)
  host_batch = _host_batch(global_batch_size, process_count)
  area = _check_range('crop_area_range', crop_area_range, 0.0, 1.0)
  aspect = _check_range('crop_aspect_range', crop_aspect_range, 0.0, float('inf'))
  clip_len, stride = int(data_cfg.num_frames), int(data_cfg.frame_stride)
  if sampler == 'cvrl_pair':
    if num_clips != 2:
      raise ValueError(f"The 'cvrl_pair' sampler makes 2 clips; num_clips is {num_clips}.")
    power = float(data_cfg.sampling_power)
    starts_fn = lambda s, n: sampling.cvrl_pair_starts(s, n, clip_len, stride, power)
  elif sampler == 'rho':
    if num_clips < 1:
      raise ValueError(f"The 'rho' sampler needs num_clips >= 1; got {num_clips}.")
    distance = int(data_cfg.rho_max_distance)
    starts_fn = lambda s, n: sampling.rho_starts(s, n, num_clips, clip_len, stride, distance)
  elif sampler == 'same_start':
    starts_fn = lambda s, n: sampling.same_starts(s, n, num_clips, clip_len, stride)
  else:
    raise ValueError(f"Unknown sampler {sampler!r}; expected 'cvrl_pair', 'rho' or "
                     "'same_start'.")

  source = _make_source(data_cfg, 'train', process_index=process_index,
                        process_count=process_count, host_split=data_cfg.host_split)
  source.check_readable()
  stream = _raw_stream(source, seed=seed, start_position=start_position, num_epochs=None,
                       shuffle=True, shuffle_buffer=data_cfg.shuffle_buffer)
  if data_cfg.host_split == 'records':
    stream = _keep_host_slice(stream, global_batch=global_batch_size, host_batch=host_batch,
                              process_index=process_index)
  else:
    stream = stream.map(lambda ex: dict(ex, position=tf.stack([ex['epoch'], ex['index'] + 1])))
  views_fn, shape = _random_clips_fn(
      starts_fn=starts_fn, num_clips=num_clips, clip_len=clip_len, stride=stride,
      size=int(data_cfg.image_size), area_range=area, aspect_range=aspect, jpeg=source.jpeg)
  example_fn = _example_fn(source, views_fn, shape, seed=seed,
                           key_fn=_key_fn(data_cfg.host_split, process_index, process_count))
  examples = stream.map(example_fn, num_parallel_calls=_parallel(data_cfg), deterministic=True)
  return _finish(examples, data_cfg, host_batch), source


def make_pretrain_iterator(data_cfg, *, num_clips: int, sampler: str,
                           crop_area_range: Sequence[float], crop_aspect_range: Sequence[float],
                           global_batch_size: int, seed: int,
                           start_position: Sequence[int] = (0, 0), process_index: int | None = None,
                           process_count: int | None = None) -> DataIterator:
  """Endless pretraining batches of `num_clips` clips per video for this host.

  Yields {'video': uint8 [B_host, V, T, H, W, 3], 'label': int32 [B_host], 'key': uint32
  [B_host, 2], 'position': int64 [2]}, with T = data_cfg.num_frames at data_cfg.frame_stride and
  H = W = data_cfg.image_size. `sampler` is 'cvrl_pair' (V = 2), 'rho' (V = num_clips, starts
  at most data_cfg.rho_max_distance apart when that is > 0) or 'same_start' (V = num_clips crops
  of one clip). Passing a batch's 'position' as
  `start_position` continues with the next batch exactly. Process index/count default to JAX's.
  """
  dataset, source = make_pretrain_dataset(
      data_cfg, num_clips=num_clips, sampler=sampler, crop_area_range=crop_area_range,
      crop_aspect_range=crop_aspect_range, global_batch_size=global_batch_size, seed=seed,
      start_position=start_position, process_index=process_index, process_count=process_count)
  return DataIterator(dataset, source)


def make_eval_dataset(data_cfg, *, split: str, mode: str, global_batch_size: int, seed: int,
                      num_epochs: int | None = 1, process_index: int | None = None,
                      process_count: int | None = None) -> tuple[tf.data.Dataset, Any]:
  """The evaluation tf.data pipeline and its source (see `make_eval_iterator`)."""
  process_index, process_count = _hosts(process_index, process_count)
  host_batch = _host_batch(global_batch_size, process_count)
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f'num_epochs must be None (endless) or >= 1; got {num_epochs}.')
  source = _make_source(data_cfg, split, process_index=process_index,
                        process_count=process_count, host_split=data_cfg.host_split)
  d = data_cfg
  if mode == 'train_clip':
    clip_len, stride = int(d.eval_num_frames), int(d.eval_frame_stride)
    views_fn, shape = _random_clips_fn(
        starts_fn=lambda s, n: sampling.uniform_start(s, n, clip_len, stride), num_clips=1,
        clip_len=clip_len, stride=stride, size=int(d.eval_image_size), area_range=(0.3, 1.0),
        aspect_range=(0.5, 2.0), jpeg=source.jpeg)
  elif mode == 'test_views':
    if d.eval_crop_size > d.eval_resize:
      raise ValueError(f'data.eval_crop_size ({d.eval_crop_size}) must not exceed '
                       f'data.eval_resize ({d.eval_resize}).')
    views_fn, shape = _test_views_fn(
        num_temporal=int(d.eval_num_temporal_views), num_spatial=int(d.eval_num_spatial_views),
        clip_len=int(d.eval_num_frames), stride=int(d.eval_frame_stride),
        resize=int(d.eval_resize), crop=int(d.eval_crop_size), jpeg=source.jpeg)
  elif mode == 'center_clip':
    if d.eval_image_size > d.eval_resize:
      raise ValueError(f'data.eval_image_size ({d.eval_image_size}) must not exceed '
                       f'data.eval_resize ({d.eval_resize}).')
    views_fn, shape = _center_clip_fn(
        clip_len=int(d.eval_num_frames), stride=int(d.eval_frame_stride),
        resize=int(d.eval_resize), size=int(d.eval_image_size), jpeg=source.jpeg)
  else:
    raise ValueError(f'Unknown evaluation mode {mode!r}; expected one of {EVAL_MODES}.')

  source.check_readable()
  stream = _raw_stream(source, seed=seed, start_position=(0, 0), num_epochs=num_epochs,
                       shuffle=num_epochs != 1, shuffle_buffer=d.shuffle_buffer)
  stream = _with_padding(stream) if num_epochs is not None else stream.map(
      lambda ex: dict(ex, valid=tf.constant(True)))
  if d.host_split == 'records':
    stream = _keep_host_slice(stream, global_batch=global_batch_size, host_batch=host_batch,
                              process_index=process_index)
    stream = stream.map(lambda ex: {k: v for k, v in ex.items() if k != 'position'})
  elif num_epochs is not None:  # every host yields as many batches as the host with the most data
    num_batches = math.ceil(max(source.host_counts(num_epochs)) / host_batch)
    stream = stream.take(num_batches * host_batch)
  example_fn = _example_fn(source, views_fn, shape, seed=seed,
                           key_fn=_key_fn(d.host_split, process_index, process_count))
  examples = stream.map(example_fn, num_parallel_calls=_parallel(d), deterministic=True)
  return _finish(examples, d, host_batch), source


def make_eval_iterator(data_cfg, *, split: str, mode: str, global_batch_size: int, seed: int,
                       num_epochs: int | None = 1, process_index: int | None = None,
                       process_count: int | None = None) -> DataIterator:
  """Evaluation batches for this host.

  Modes: 'train_clip' (one random clip of data_cfg.eval_num_frames at eval_frame_stride, random
  resized crop with area 0.3-1 and aspect 0.5-2 to eval_image_size: linear-probe training),
  'test_views' (eval_num_temporal_views x eval_num_spatial_views views, temporal-major: frames
  resized to short side eval_resize, square crops of eval_crop_size), 'center_clip' (the centred
  clip, short side eval_resize, centre crop eval_image_size: kNN memory banks).

  Yields {'video': uint8 [B_host, V, T, H, W, 3], 'label', 'key', 'mask': bool [B_host]}. With
  num_epochs=1 the examples are read in file order and every example appears exactly once over
  all hosts; the last batches are padded (zeros, label 0, key 0xFFFFFFFF twice, mask False), and
  every host yields the same number of batches. num_epochs=None repeats endlessly, reshuffled.
  """
  dataset, source = make_eval_dataset(
      data_cfg, split=split, mode=mode, global_batch_size=global_batch_size, seed=seed,
      num_epochs=num_epochs, process_index=process_index, process_count=process_count)
  return DataIterator(dataset, source)
