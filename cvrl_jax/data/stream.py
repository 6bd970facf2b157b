"""The resumable stream: epochs of numbered raw records, the per-host split, example keys and seeds.

A pretraining stream is a pure function of (seed, start position): epoch e shuffles its files and
records with seeds derived from (seed, e) and numbers its records 0, 1, 2, ...; the start epoch
skips the records already consumed (raw serialized records: nothing parsed). Per-host split
'files' (host h reads files h::H) or 'records' (every host reads the global stream and keeps its
slice of each global batch, before parsing). Every host-side random draw is seeded by
`example_seed(seed, key)` of the example's key (docs/architecture.md, "Data contract").
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
PAD_KEY = np.iinfo(np.uint32).max
# Salts separating the seed streams derived from the run seed.
FILE_ORDER, RECORD_ORDER, EXAMPLE = 1, 2, 3


def seed_pair(seed: int, *salts) -> tf.Tensor:
  pair = tf.constant([seed & 0x7FFFFFFF, (seed >> 31) & 0x7FFFFFFF], tf.int64)
  for salt in salts:
    pair = tf.random.experimental.stateless_fold_in(pair, tf.cast(salt, tf.int64))
  return pair


def record_order_seed(seed: int, epoch: tf.Tensor) -> tf.Tensor:
  """int64 seed of the record shuffle buffer of one epoch."""
  return tf.random.stateless_uniform([], seed_pair(seed, RECORD_ORDER, epoch), minval=None,
                                     maxval=None, dtype=tf.int64)


def raw_stream(source, *, seed: int, start_position: Sequence[int], num_epochs: int | None,
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


def with_padding(stream: tf.data.Dataset) -> tf.data.Dataset:
  """Marks elements valid and appends an endless run of invalid padding elements."""
  spec = stream.element_spec
  pad = {k: tf.constant('') if s.dtype == tf.string else tf.zeros(s.shape, s.dtype)
         for k, s in spec.items()}
  pad['valid'] = tf.constant(False)
  valid = stream.map(lambda ex: dict(ex, valid=tf.constant(True)))
  return valid.concatenate(tf.data.Dataset.from_tensors(pad).repeat())


def keep_host_slice(stream: tf.data.Dataset, *, global_batch: int, host_batch: int,
                    process_index: int, start_count: int = 0) -> tf.data.Dataset:
  """'records' split: host h keeps the records of slots [h * host_batch, (h + 1) * host_batch) of
  each global batch, before any parsing.

  A record's slot is its place in the global batch counted from the start of the run's stream
  (`start_count`: records before the stream's first element, `start_count()`), so a stream
  resumed at any record position deals out the same slots. Every kept element carries
  'position', its own (epoch, index + 1): a host batch's position is that of its last record,
  which stays exact when a bad record was dropped and the batch took one more from the next
  global batch. With padding ('valid'), the stream ends at the first global batch of padding only.
  """
  lo, hi = process_index * host_batch, (process_index + 1) * host_batch
  slot = lambda n: (n + start_count) % global_batch
  numbered = stream.enumerate()
  if 'valid' in stream.element_spec:
    numbered = numbered.take_while(
        lambda n, ex: tf.logical_or(ex['valid'], slot(n) != 0))
  mine = numbered.filter(lambda n, ex: tf.logical_and(slot(n) >= lo, slot(n) < hi))
  return mine.map(lambda n, ex: dict(ex, position=tf.stack([ex['epoch'], ex['index'] + 1])))


def start_count(source, start_position: Sequence[int], process_index: int) -> int:
  """Records of the global stream before `start_position` (epoch, consumed): the slot origin of
  a resumed 'records' split (every host reads every record, so epochs have equal lengths)."""
  epoch, consumed = (int(v) for v in start_position)
  if epoch == 0:
    return consumed
  return epoch * source.host_counts(1)[process_index] + consumed


def key_fn(host_split: str, process_index: int, process_count: int):
  """Example key (uint32 [2]): (epoch, index), with the host folded in for 'files' splits."""
  def key(ex):
    first = ex['epoch']
    if host_split == 'files':
      first = first * process_count + process_index
    return tf.cast(tf.stack([first, ex['index']]), tf.uint32)
  return key


def example_seed(seed: int, key: tf.Tensor) -> tf.Tensor:
  return seed_pair(seed, EXAMPLE, tf.cast(key[0], tf.int64), tf.cast(key[1], tf.int64))


def hosts(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is not in [0, {process_count}).')
  return process_index, process_count


def host_batch(global_batch_size: int, process_count: int) -> int:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f'The global batch size {global_batch_size} must be a positive multiple of '
                     f'the number of hosts ({process_count}).')
  return global_batch_size // process_count


def parallel(data_cfg) -> int:
  return AUTOTUNE if data_cfg.num_parallel_calls < 0 else int(data_cfg.num_parallel_calls)


def finish(examples: tf.data.Dataset, data_cfg, host_batch: int) -> tf.data.Dataset:
  """Batch per host, one position per batch, prefetch, deterministic options."""
  batches = examples.batch(host_batch, drop_remainder=True)
  if 'position' in examples.element_spec:
    batches = batches.map(lambda b: dict(b, position=b['position'][-1]))
  options = tf.data.Options()
  options.deterministic = True
  options.autotune.enabled = True
  return batches.prefetch(data_cfg.prefetch if data_cfg.prefetch > 0 else AUTOTUNE).with_options(
      options)

