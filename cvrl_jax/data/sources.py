"""Where raw examples come from: DMVR TFRecord files (local or gs://) or a TFDS video dataset.

A source yields, per epoch, a stream of raw elements ({'record': serialized example} for TFRecords)
that `parse()` turns into {'frames': encoded frames [L], 'label'}, each with its 'file' and
'file_record' (index in the file) for naming bad records (cvrl_jax/data/records.py); it counts its
examples per host and explains read errors naming the file. A truncated or corrupt TFRecord file is reported as a
ValueError naming the file.
"""
from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from cvrl_jax import paths
from cvrl_jax.data import dmvr
from cvrl_jax.data import records as records_lib
from cvrl_jax.data import stream as stream_lib

AUTOTUNE = tf.data.AUTOTUNE
MAX_CYCLE_LENGTH = 16  # TFRecord files read in parallel


def _hidden_match(pattern: str, path: str) -> bool:
  """Whether a part of `path` starts with '.' where the pattern's part does not (the shell's
  rule: `*` and `?` never match a leading dot; TensorFlow's glob would match it)."""
  return any(m.startswith('.') and not p.startswith('.')
             for p, m in zip(reversed(pattern.split('/')), reversed(path.split('/'))))


def glob_files(pattern: str) -> list[str]:
  """tf.io.gfile.glob (local or gs://) under the shell's rule for leading dots, without the
  converter's own non-shard files (labels.txt, summaries, hidden metadata and temporary files)."""
  pattern = pattern if paths.is_url(pattern) else os.path.expanduser(pattern)
  return [path for path in paths.glob(pattern) if not _hidden_match(pattern, path)
          and not dmvr.is_converter_file(os.path.basename(path))]


def resolve_files(patterns: str) -> list[str]:
  """Sorted files matching comma-separated glob patterns; each pattern must match something.

  Patterns go through tf.io.gfile, so cloud paths (gs://...) work as well as local ones; as in
  the shell, `*` never matches a leading dot, and the converter's own files never match
  (`glob_files`); folders are not data files and are left out.
  """
  files = set()
  for pattern in (p.strip() for p in patterns.split(',')):
    if not pattern:
      continue
    matched = glob_files(pattern)
    if not matched:
      raise (paths.missing_folder_error(pattern)
             or FileNotFoundError(f'No files match the data pattern {pattern!r}.'))
    shards = [path for path in matched if not paths.isdir(path)]
    if not shards:
      raise ValueError(f'The data pattern {pattern!r} matches only the folder {matched[0]}: name '
                       f'its TFRecord files, e.g. {dmvr.shard_pattern(matched[0], "train")}.')
    files.update(shards)
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
  return ValueError(f'TFRecord file {path} is truncated or corrupt '
                    f'({records_lib.tf_error_text(error)}).')


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
  source = make_source(data_cfg, split, process_index=0, process_count=1, host_split='records')
  return source.host_counts(1)[0]


class TFRecordSource:
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
      files = tf.random.experimental.stateless_shuffle(
          files, stream_lib.seed_pair(seed, stream_lib.FILE_ORDER, epoch))
    records = tf.data.Dataset.from_tensor_slices(files).interleave(
        lambda path: records_lib.identify(tf.data.TFRecordDataset(path), path),
        cycle_length=min(len(self.files), MAX_CYCLE_LENGTH),
        block_length=1, num_parallel_calls=AUTOTUNE, deterministic=True)
    if shuffle:
      records = records.shuffle(shuffle_buffer, seed=stream_lib.record_order_seed(seed, epoch))
    return records

  @staticmethod
  def parse(element: Mapping[str, tf.Tensor], audio: bool = False) -> dict[str, tf.Tensor]:
    """{'frames', 'label'}; with `audio` also 'audio', 'audio_sample_rate', 'start_timestamp'
    and 'end_timestamp' (dmvr.parse_sequence_example)."""
    if not audio:
      parsed = dmvr.parse_sequence_example(element['record'], frames_only=True)
      return {'frames': parsed['frames'], 'label': parsed['label']}
    parsed = dmvr.parse_sequence_example(element['record'], audio=True)
    names = ('frames', 'label', 'audio', 'audio_sample_rate', 'start_timestamp', 'end_timestamp')
    return {name: parsed[name] for name in names}

  def check_audio(self, sample_rate: int) -> None:
    """Fails early, naming the file, if the first record has no audio track at `sample_rate`."""
    for path in self.files:
      for record in tf.data.TFRecordDataset(path).take(1):
        parsed = dmvr.parse_sequence_example(record, audio=True)
        rate, samples = int(parsed['audio_sample_rate']), int(tf.size(parsed['audio']))
        if not samples or not rate:
          raise ValueError(f'The first record of {path} has no audio track '
                           f'({dmvr.AUDIO_KEY}), but this run reads audio (a clip plan with '
                           f"audio, or config.eval.modality='audio'); convert the videos with "
                           f'--audio (sounds with --audio-only) --audio-rate {sample_rate}.')
        if rate != sample_rate:
          raise ValueError(f'The audio of {path} is stored at {rate} Hz, but this run reads it at '
                           f'{sample_rate} Hz; convert with --audio-rate {sample_rate} or change '
                           'the config\'s sample rate.')
        return

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


class TFDSSource:
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
    data = self._data.enumerate().map(lambda index, ex: {
        'record': tf.io.serialize_tensor(ex['video']), 'label': tf.cast(ex['label'], tf.int32),
        'file': self.name, 'file_record': index})
    if shuffle:
      data = data.shuffle(shuffle_buffer, seed=stream_lib.record_order_seed(seed, epoch))
    return data

  @staticmethod
  def parse(element: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return {'frames': tf.io.parse_tensor(element['record'], tf.string), 'label': element['label']}

  def host_counts(self, repeats: int) -> list[int]:
    return [repeats * self._builder.info.splits[s].num_examples for s in self._host_splits]

  def check_audio(self, sample_rate: int) -> None:
    del sample_rate
    raise ValueError(f'This run reads audio, but {self.name} holds frames only; convert '
                     'the videos with python -m cvrl_jax.convert --audio and set '
                     'data.train_files.')

  def check_readable(self) -> None:
    if not self._builder.info.splits[self._split].num_examples:
      raise ValueError(f'{self.name} has no examples for this host.')

  def explain(self, error: tf.errors.DataLossError) -> ValueError:
    return ValueError(f'A file of {self.name} is truncated or corrupt '
                      f'({records_lib.tf_error_text(error)}).')


def make_source(data_cfg, split: str, *, process_index: int, process_count: int,
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
    return TFRecordSource(hosts_files[process_index], hosts_files, f'data pattern {patterns!r}')
  if data_cfg.tfds_name:
    tfds_split = data_cfg.tfds_train_split if split == 'train' else data_cfg.tfds_eval_split
    return TFDSSource(data_cfg.tfds_name, tfds_split, data_cfg.tfds_data_dir, process_index,
                       process_count, by_files=host_split == 'files')
  which = 'train_files' if split == 'train' else 'eval_files'
  raise ValueError(f'No {split} data: set data.{which} (TFRecord globs) or data.tfds_name.')


