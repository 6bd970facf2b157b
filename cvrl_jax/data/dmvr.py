"""DMVR-format records: `tf.train.SequenceExample` keys, writer and tf.data parser.

One record is one video: the feature list `image/encoded` holds one JPEG string per frame and
the context holds `clip/label/index` (one or more int64). DMVR's generator also writes the
optional `clip/label/string`, `clip/data_path` and `clip/start/timestamp` / `clip/end/timestamp`
(microseconds); records written by other tools with only the two required keys read as well.

Audio, when the converter stores it, follows DMVR's generator (`examples/generate_from_file.py`,
`--decode_audio`) and reader (`modalities.add_audio`): the feature list `WAVEFORM/feature/floats`
holds one feature whose float list is the whole mono track. DMVR keeps no sample rate in the
record (its readers are told the rate); ours also writes it to the context as
`WAVEFORM/sample_rate` (int64, samples per second) and starts the track at
`clip/start/timestamp`, so sample i is the sound at start + i / rate.
"""
from __future__ import annotations

import os
import re
from typing import Callable, Iterable, Sequence

import numpy as np
import tensorflow as tf

from cvrl_jax import paths

IMAGE_KEY = 'image/encoded'
LABEL_INDEX_KEY = 'clip/label/index'
LABEL_STRING_KEY = 'clip/label/string'
DATA_PATH_KEY = 'clip/data_path'
START_TIMESTAMP_KEY = 'clip/start/timestamp'
END_TIMESTAMP_KEY = 'clip/end/timestamp'
AUDIO_KEY = 'WAVEFORM/feature/floats'
AUDIO_RATE_KEY = 'WAVEFORM/sample_rate'

# Parsed value of a field the record does not have.
NO_LABEL = -1
NO_TIMESTAMP = -1


def _bytes_feature(values: Sequence[bytes]) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _int64_feature(values: Sequence[int]) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _float_feature(values) -> tf.train.Feature:
  # A Python list is several times faster to copy in than a numpy array (30 s of audio: 0.2 s).
  return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(values,
                                                                         np.float32).tolist()))


def _as_bytes(value: str | bytes) -> bytes:
  return value.encode('utf-8') if isinstance(value, str) else bytes(value)


def make_sequence_example(
    jpeg_frames: Sequence[bytes],
    labels: int | Sequence[int],
    *,
    label_string: str | bytes | None = None,
    data_path: str | bytes | None = None,
    start_timestamp_us: int | None = None,
    end_timestamp_us: int | None = None,
    audio: Sequence[float] | None = None,
    audio_sample_rate: int | None = None,
) -> tf.train.SequenceExample:
  """Builds one DMVR record from per-frame JPEG strings and one or more label indices, and
  optionally the mono audio track (float samples) with its sample rate.

  An audio-only record (a labelled sound: `jpeg_frames` empty, `audio` given) has no
  `image/encoded` feature list; it needs a non-empty track."""
  if (audio is None) != (audio_sample_rate is None):
    raise ValueError('A DMVR record with audio needs both the samples and audio_sample_rate.')
  if not jpeg_frames and (audio is None or not len(audio)):
    raise ValueError('A DMVR record needs at least one frame or a non-empty audio track; got '
                     'neither.')
  labels = [int(labels)] if isinstance(labels, int) else [int(l) for l in labels]
  example = tf.train.SequenceExample()
  context = example.context.feature
  context[LABEL_INDEX_KEY].CopyFrom(_int64_feature(labels))
  if label_string is not None:
    context[LABEL_STRING_KEY].CopyFrom(_bytes_feature([_as_bytes(label_string)]))
  if data_path is not None:
    context[DATA_PATH_KEY].CopyFrom(_bytes_feature([_as_bytes(data_path)]))
  if start_timestamp_us is not None:
    context[START_TIMESTAMP_KEY].CopyFrom(_int64_feature([start_timestamp_us]))
  if end_timestamp_us is not None:
    context[END_TIMESTAMP_KEY].CopyFrom(_int64_feature([end_timestamp_us]))
  if jpeg_frames:
    frames = example.feature_lists.feature_list[IMAGE_KEY].feature
    for jpeg in jpeg_frames:
      frames.add().bytes_list.value.append(jpeg)
  if audio is not None:
    context[AUDIO_RATE_KEY].CopyFrom(_int64_feature([int(audio_sample_rate)]))
    example.feature_lists.feature_list[AUDIO_KEY].feature.add().CopyFrom(_float_feature(audio))
  return example


def temporary_path(path: str) -> str:
  """Name a shard is written under until it is complete (same folder, so the rename is atomic)."""
  return paths.join(paths.parent(path), f'.{os.path.basename(path)}.tmp-{os.getpid()}')


def write_shard(path: str, records: Iterable[tf.train.SequenceExample | bytes],
                before_rename: Callable[[str, int], None] | None = None) -> int:
  """Writes records to a TFRecord file atomically and returns how many were written.

  The file is written under a temporary name in the same folder and renamed to `path` only after
  it is complete and closed, so a file under its final name is always whole. `before_rename(tmp,
  count)` runs on the complete file just before the rename (the converter records it there).
  """
  tmp = temporary_path(path)
  count = 0
  try:
    with tf.io.TFRecordWriter(tmp) as writer:
      for record in records:
        writer.write(record if isinstance(record, bytes) else record.SerializeToString())
        count += 1
    if before_rename is not None:
      before_rename(tmp, count)
    paths.replace(tmp, path)
  except BaseException:
    if paths.exists(tmp):
      paths.remove(tmp)
    raise
  return count


def parse_sequence_example(serialized: tf.Tensor, *, frames_only: bool = False,
                           audio: bool = False) -> dict[str, tf.Tensor]:
  """Parses one serialized DMVR record inside tf.data.

  Returns 'frames' (tf.string [L], one JPEG per frame; [0] for an audio-only record) and 'label' (int32 scalar: the first
  label index, NO_LABEL if the record has none), plus 'labels' (int32 [n], all indices),
  'label_string', 'data_path' (tf.string, '' if absent) and 'start_timestamp' /
  'end_timestamp' (int64, NO_TIMESTAMP if absent). `frames_only` skips the optional fields.
  `audio` adds 'audio' (float32 [num_samples], empty if the record has none) and
  'audio_sample_rate' (int64, 0 if absent).
  """
  context_features = {LABEL_INDEX_KEY: tf.io.VarLenFeature(tf.int64)}
  # allow_missing: an audio-only record has no image/encoded list (its frames parse as [0]).
  sequence_features = {IMAGE_KEY: tf.io.FixedLenSequenceFeature([], tf.string,
                                                                allow_missing=True)}
  if audio:
    context_features[AUDIO_RATE_KEY] = tf.io.FixedLenFeature([], tf.int64, default_value=0)
    sequence_features[AUDIO_KEY] = tf.io.VarLenFeature(tf.float32)
  if not frames_only:
    context_features.update({
        LABEL_STRING_KEY: tf.io.FixedLenFeature([], tf.string, default_value=''),
        DATA_PATH_KEY: tf.io.FixedLenFeature([], tf.string, default_value=''),
        START_TIMESTAMP_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=NO_TIMESTAMP),
        END_TIMESTAMP_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=NO_TIMESTAMP),
    })
  context, sequence = tf.io.parse_single_sequence_example(
      serialized,
      context_features=context_features,
      sequence_features=sequence_features)
  labels = tf.cast(context[LABEL_INDEX_KEY].values, tf.int32)
  first_label = tf.concat([labels, [NO_LABEL]], axis=0)[0]
  parsed = {'frames': sequence[IMAGE_KEY], 'label': first_label}
  if audio:
    parsed['audio'] = sequence[AUDIO_KEY].values  # the one feature's floats, in order
    parsed['audio_sample_rate'] = context[AUDIO_RATE_KEY]
  if not frames_only:
    parsed.update({
        'labels': labels,
        'label_string': context[LABEL_STRING_KEY],
        'data_path': context[DATA_PATH_KEY],
        'start_timestamp': context[START_TIMESTAMP_KEY],
        'end_timestamp': context[END_TIMESTAMP_KEY],
    })
  return parsed


# ------------------------------------------------------------------------------------------------
# Dataset folder layout shared by the converter and the demo data: shards
# `{split}-{i:05d}-of-{n:05d}.tfrecord`, `labels.txt` (line i = name of label index i) and
# `{split}_summary.json` (written and skipped videos, per-shard record counts and sizes).

LABELS_FILE = 'labels.txt'
SUMMARY_SUFFIX = '_summary.json'


def shard_path(folder: str, split: str, index: int, num_shards: int) -> str:
  return paths.join(folder, f'{split}-{index:05d}-of-{num_shards:05d}.tfrecord')


def shard_pattern(folder: str, split: str) -> str:
  return paths.join(folder, f'{split}-*-of-*.tfrecord')


def summary_path(folder: str, split: str) -> str:
  return paths.join(folder, split + SUMMARY_SUFFIX)


def meta_path(shard: str) -> str:
  """The converter's hidden per-shard record of what it wrote there: `.{shard name}.json`."""
  return paths.join(paths.parent(shard), f'.{os.path.basename(shard)}.json')


_SHARD = r'.+-\d{5}-of-\d{5}\.tfrecord'
# Temporary files of the converter's writes (name, then the writer's process id): a shard's
# (`temporary_path`), and its metadata's, labels.txt's and a summary's (cvrl_jax.paths.write_text
# adds `.tmp-PID` to the name; earlier versions also hid it behind a dot).
_OWN_TEMPORARY = re.compile(
    rf'^(?:\.{_SHARD}|\.{{1,2}}{_SHARD}\.json|\.?{re.escape(LABELS_FILE)}'
    rf'|\.?.+{re.escape(SUMMARY_SUFFIX)})\.tmp-(?P<pid>\d+)$')


def temporary_pid(name: str) -> int | None:
  """The writer's process id if `name` is one of the converter's temporary files, else None."""
  match = _OWN_TEMPORARY.match(name)
  return int(match['pid']) if match else None


def is_converter_file(name: str) -> bool:
  """Whether a file name is one of the converter's own non-shard files: labels.txt, summaries,
  per-shard metadata (`.{shard}.json`) and temporary files. Data globs never return these."""
  return (name == LABELS_FILE or name.endswith(SUMMARY_SUFFIX) or temporary_pid(name) is not None
          or (name.startswith('.') and name.endswith('.tfrecord.json')))


def write_text_atomic(path: str, text: str) -> None:
  paths.write_text(path, text)


def write_labels(folder: str, names: Sequence[str]) -> str:
  path = paths.join(folder, LABELS_FILE)
  write_text_atomic(path, ''.join(f'{name}\n' for name in names))
  return path


def read_labels(folder: str) -> list[str] | None:
  """Label names by index from `folder/labels.txt`, or None if there is none."""
  path = paths.join(folder, LABELS_FILE)
  if not paths.exists(path):
    return None
  return paths.read_text(path).splitlines()
