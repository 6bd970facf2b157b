"""Bad records: which are skipped and counted, which stop the job, each named by file and record.

Every raw element carries 'file' (the TFRecord file it was read from, or the TFDS dataset) and
'file_record' (its index in that file), so a problem can be named exactly.

- `guarded_map` runs the example function on each element in its own tiny dataset and turns an
  element that fails to parse or decode (not a SequenceExample, no frames, an undecodable JPEG,
  frames of two sizes) into a placeholder marked 'bad', in stream order; nothing stops.
- Pretraining (`skip_bad` + `SkipCounter`): a bad record is dropped, the next good records fill
  the batch, and it is logged and counted with its file and record index. The job stops, naming
  the file with the most bad records, once the bad records exceed `data.max_bad_fraction` of the
  records read (counting at least one epoch's records, so a few bad records early in a run or
  just after a resume never stop it; 0 stops at the first). Dropping is deterministic, so a
  resumed run reads exactly what an uninterrupted one does and passes the same records again.
- Evaluation (`EvalChecks`): skipping would change the metric, so a bad record, a record
  without a label or a label outside [0, data.num_classes) (or outside the names of a labels.txt
  beside the files) stops the job with one sentence naming the file, the record and the label.
"""
from __future__ import annotations

import collections
import re

from absl import logging
import numpy as np
import tensorflow as tf

from cvrl_jax import paths
from cvrl_jax.data import dmvr

FIELDS = ('file', 'file_record', 'bad')
MAX_BAD_RUN = 256  # bad records in a row after which pretraining stops
_NODE_TEXT = re.compile(r'\{\{[^}]*\}\}|\[\[[^\]]*\]\]|\[Op:[^\]]*\]|\s*name:\s*$')


class BadRecordsError(ValueError):
  """Too many records of the pretraining data cannot be decoded."""


def tf_error_text(error: tf.errors.OpError) -> str:
  """A TensorFlow error's own message without graph-node text ({{function_node ...}}, [[...]]);
  the full text goes to the log at --verbosity=1."""
  logging.vlog(1, 'TensorFlow error in full: %s', error.message)
  text = _NODE_TEXT.sub(' ', error.message)
  return ' '.join(text.split()).rstrip(' .') or type(error).__name__


def identify(records: tf.data.Dataset, file) -> tf.data.Dataset:
  """Elements {'record', 'file', 'file_record'} of one file's records (or a TFDS split's)."""
  return records.enumerate().map(
      lambda index, record: {'record': record, 'file': file, 'file_record': index})


def same_size_frames(frames: tf.Tensor) -> tf.Tensor:
  """JPEG frames tf.string [L] (a clip's), failing (so the record is bad) unless all have one
  size: a crop box drawn on the first would otherwise cut a different region of the others.
  (The evaluation views decode whole frames, and frames of two sizes fail to stack there.)"""
  shapes = tf.map_fn(tf.image.extract_jpeg_shape, frames,
                     fn_output_signature=tf.TensorSpec([3], tf.int32))
  same = tf.reduce_all(tf.equal(shapes, shapes[:1]))
  with tf.control_dependencies([tf.debugging.Assert(same, ['frames of two sizes'])]):
    return tf.identity(frames)


def guarded_map(stream: tf.data.Dataset, example_fn, num_parallel_calls) -> tf.data.Dataset:
  """stream.map(example_fn) in order, plus 'bad' (and the element's 'file', 'file_record'): an
  element whose example_fn fails becomes zeros (keeping 'position' and 'mask') marked bad."""
  spec = stream.map(example_fn).element_spec

  def placeholder(ex):
    out = {k: tf.zeros(s.shape, s.dtype) if s.dtype != tf.string else tf.fill(s.shape, '')
           for k, s in spec.items()}
    if 'position' in out:
      out['position'] = ex['position']
    if 'mask' in out:
      out['mask'] = ex['valid']
    return out

  def tagged(fn, bad):
    return lambda ex: dict(fn(ex), bad=tf.constant(bad), file=ex['file'],
                           file_record=ex['file_record'])

  def guarded(ex):
    one = tf.data.Dataset.from_tensors(ex)
    good = one.map(tagged(example_fn, False)).ignore_errors()
    return good.concatenate(one.map(tagged(placeholder, True))).take(1)

  return stream.interleave(guarded, block_length=1, num_parallel_calls=num_parallel_calls,
                           deterministic=True)


def skip_bad(examples: tf.data.Dataset) -> tf.data.Dataset:
  """Drops the bad elements; each good one gets 'skipped': the bad ones just before it, as
  'file\trecord\n' lines (so the host learns of them with the batch that replaced them).

  After MAX_BAD_RUN bad elements in a row, one is let through (still marked bad, carrying the
  run) so the host hears of it instead of waiting forever on data that is all bad.
  """
  def fold(state, ex):
    pending, run = state
    line = tf.strings.join([ex['file'], '\t', tf.strings.as_string(ex['file_record']), '\n'])
    run = tf.where(ex['bad'], run + 1, tf.constant(0, tf.int64))
    through = run >= MAX_BAD_RUN
    out = dict(ex, skipped=tf.where(ex['bad'], tf.strings.join([pending, line]), pending),
               through=tf.logical_or(tf.logical_not(ex['bad']), through))
    keep = tf.logical_and(ex['bad'], tf.logical_not(through))
    pending = tf.where(keep, tf.strings.join([pending, line]), tf.constant(''))
    return (pending, tf.where(through, tf.constant(0, tf.int64), run)), out

  kept = examples.scan((tf.constant(''), tf.constant(0, tf.int64)), fold).filter(
      lambda ex: ex['through'])
  return kept.map(lambda ex: {k: v for k, v in ex.items() if k != 'through'})


def _text(value) -> str:
  return value.decode('utf-8', 'replace') if isinstance(value, bytes) else str(value)


class SkipCounter:
  """Pretraining batches: logs and counts the skipped records, stops past the allowed fraction.

  `skipped` lists (file, record index) in the order met; a resumed run continues the list and
  the count of records read from its checkpoint (`state`, `restore`), so each record skipped
  before the resumed step is listed once.
  """

  def __init__(self, data_cfg, source, *, process_index: int, process_count: int):
    self.max_fraction = float(data_cfg.max_bad_fraction)
    self.skipped: list[tuple[str, int]] = []
    self.read = 0
    self._source = source
    self._host = (process_index, process_count, data_cfg.host_split)
    self._epoch_records = None

  def epoch_records(self) -> int:
    """Records of one epoch this host parses (counted on the first skip only)."""
    if self._epoch_records is None:
      index, count, host_split = self._host
      records = self._source.host_counts(1)[index]
      self._epoch_records = records if host_split == 'files' else records // count
    return self._epoch_records

  def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    _, _, bad = (batch.pop(key) for key in FIELDS)
    self.read += int(np.sum(~bad))
    for lines in batch.pop('skipped'):
      for line in _text(lines).splitlines():
        path, index = line.rsplit('\t', 1)
        self._skip(path, int(index))
    if bad.any():
      path, index = self.skipped[-1]
      raise BadRecordsError(
          f'{MAX_BAD_RUN} records in a row cannot be decoded, the last is record {index} of '
          f'{path}: check that data.train_files names video records, and reconvert the data.')
    return batch

  def _skip(self, path: str, index: int) -> None:
    self.skipped.append((path, index))
    self.read += 1
    logging.warning('Skipped record %d of %s: it cannot be decoded into clips (%d skipped of %d '
                    'records read).', index, path, len(self.skipped), self.read)
    allowed = self.max_fraction * max(self.read, self.epoch_records())
    if len(self.skipped) > allowed:
      per_file = collections.Counter(p for p, _ in self.skipped)
      worst, count = per_file.most_common(1)[0]
      first = min(i for p, i in self.skipped if p == worst)
      raise BadRecordsError(
          f'{len(self.skipped)} of the {self.read} records read cannot be decoded, more than '
          f'data.max_bad_fraction = {self.max_fraction:g} allows; the worst file is {worst} '
          f'({count} bad record{"s" * (count != 1)}, the first is record {first}): reconvert or '
          'remove those videos, or raise data.max_bad_fraction.')

  def state(self) -> dict:
    """JSON for a checkpoint's data record: what was read and skipped up to that batch."""
    return {'read': self.read, 'skipped': [[p, i] for p, i in self.skipped]}

  def restore(self, state: dict | None) -> None:
    """Continues the count of a resumed run from `state()` (None: an older checkpoint)."""
    if state:
      self.read = int(state['read'])
      self.skipped = [(str(p), int(i)) for p, i in state['skipped']]

  def summary(self) -> dict:
    """This host's `skip_summary`."""
    return skip_summary([self.state()])


def skip_summary(states) -> dict:
  """For results.json, from SkipCounter states (one per host, `state()`): each skipped record once
  as {'file', 'record'}, in the order first met (host by host), and how many times records were
  skipped (a bad record is skipped again every epoch)."""
  skipped = [(str(p), int(i)) for state in states for p, i in state['skipped']]
  return {'num_skipped_records': len(skipped),
          'skipped_records': [{'file': p, 'record': i} for p, i in dict.fromkeys(skipped)]}


def host_skip_state(saved, process_index: int, process_count: int) -> dict | None:
  """This host's SkipCounter state from a checkpoint's record of every host's (a list; an older
  checkpoint holds process 0's alone, a dict). With another process count the hosts' lists are
  merged into process 0's, so the run's summary still names every record skipped before."""
  if not saved:
    return None
  if isinstance(saved, dict):
    saved = [saved]
  if len(saved) == process_count:
    return saved[process_index]
  if process_index != 0:
    return None
  return {'read': sum(int(s['read']) for s in saved),
          'skipped': [pair for s in saved for pair in s['skipped']]}


def labels_per_folder(files) -> dict[str, int]:
  """{folder: number of names in its labels.txt} for the folders of `files` that have one."""
  counts = {}
  for folder in sorted({paths.parent(f) for f in files}):
    names = dmvr.read_labels(folder)
    if names is not None:
      counts[folder] = len(names)
  return counts


class EvalChecks:
  """Evaluation batches: a bad record or label stops the job with one sentence naming it (or,
  with skip_bad, a bad record is left out of the batch: mask False).

  Also checks at construction that data.num_classes matches every labels.txt beside the files.
  """

  def __init__(self, data_cfg, source, skip_bad: bool = False):
    self.num_classes = int(data_cfg.num_classes)
    # An online monitor during pretraining (not a reported metric) leaves a bad record out of its
    # batch instead, warning once per record, as pretraining itself skips it.
    self.skip_bad = skip_bad
    self.left_out: set[tuple[str, int]] = set()
    self._labels = labels_per_folder(getattr(source, 'files', ()))
    if self.num_classes > 0:
      for folder, count in self._labels.items():
        if count != self.num_classes:
          raise ValueError(
              f'config.data.num_classes is {self.num_classes} but '
              f'{paths.join(folder, dmvr.LABELS_FILE)} names {count} classes; set '
              f'data.num_classes={count}.')

  def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    files, indices, bad = (batch.pop(k) for k in FIELDS)
    batch.pop('skipped', None)
    real = np.asarray(batch.get('mask', np.ones(len(bad), bool)), bool)
    if self.skip_bad:
      for row in np.flatnonzero(real & np.asarray(bad, bool)):
        name = (_text(files[row]), int(indices[row]))
        if name not in self.left_out:
          self.left_out.add(name)
          logging.warning('The monitor leaves out record %d of %s: it cannot be decoded into '
                          'clips.', name[1], name[0])
      real = real & ~np.asarray(bad, bool)
      batch['mask'] = real
    for row in np.flatnonzero(real & np.asarray(bad, bool)):
      raise ValueError(
          f'Record {indices[row]} of {_text(files[row])} cannot be decoded into clips (no '
          'frames, an undecodable JPEG or frames of two sizes); evaluation does not skip '
          'records, as that would change the metric: reconvert or remove that video.')
    if self.num_classes > 0:
      labels = np.asarray(batch['label'])
      for row in np.flatnonzero(real & ((labels < 0) | (labels >= self.num_classes))):
        raise ValueError(self._label_sentence(_text(files[row]), indices[row], labels[row]))
    return batch

  def _label_sentence(self, path: str, index: int, label: int) -> str:
    where = f'Record {index} of {path}'
    if label == dmvr.NO_LABEL:
      return (f'{where} has no label (no {dmvr.LABEL_INDEX_KEY}); every record of an evaluation '
              f'split needs one in [0, {self.num_classes}).')
    return (f'{where} has label {label}, outside [0, {self.num_classes}) of '
            f'config.data.num_classes = {self.num_classes}; set data.num_classes to the number '
            'of classes of the data.')
