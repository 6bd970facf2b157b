"""Convert videos to DMVR TFRecords.

  python -m cvrl_jax.convert --input SRC --output DIR [--fps 10] [--short-side 256]
      [--jpeg-quality 90] [--num-shards N] [--workers W] [--split-name train]
      [--audio [--audio-rate 44100]]

SRC is a folder with one sub-folder of videos per class (UCF101/HMDB51 layout), or a CSV file of
`path,label` rows (an optional `path,label` header; relative paths are relative to the CSV).
Videos are decoded with PyAV at `--fps`, resized so the short side is `--short-side` pixels
(0 keeps the size) and stored as per-frame JPEGs, one `tf.train.SequenceExample` per video.

With `--audio` (off by default: frames only), each video's first audio track is also stored,
downmixed to mono and resampled to `--audio-rate` samples per second (44100 by default, the
audio-visual recipes' rate), under DMVR's audio key `WAVEFORM/feature/floats` with the rate in
`WAVEFORM/sample_rate`; the track starts at the first frame's time and is cut at the last
frame's end (cvrl_jax.data.dmvr, cvrl_jax.data.video). A video without an audio track, or whose
track cannot be decoded, is written without audio and listed in the summary's `without_audio`.

With `--audio-only`, SRC holds labelled sounds instead of videos (wav, ogg, mp3, flac: anything
PyAV decodes): a folder with one sub-folder of sound files per class, a `path,label` CSV, or the
ESC-50 layout (`SRC/audio/*.wav` and `SRC/meta/esc50.csv` with columns filename, fold, target,
category; detected by those two paths). Each record is one sound: its whole track, mono at
`--audio-rate`, under the audio key with its rate and label, and no frames (`--fps`,
`--short-side` and `--jpeg-quality` are not used). A file without a decodable, non-empty audio
track is skipped and listed in the summary like an unreadable video. ESC-50 is written fold by
fold, each fold as its own split `fold1` ... `fold5` (`--split-name` is not used), labels indexed
by the CSV's target; its protocol is 5-fold cross-validation, and the evaluation configs pick
the held-out fold (configs/avbert_esc50_linear.py, docs/recipes/avbert.md).

Output in DIR: shards `{split}-00000-of-N.tfrecord`, `labels.txt` (line i: name of label i) and
`{split}_summary.json` (videos written, every skipped input with its reason, records and bytes per
shard). Worker processes each write whole shards; a shard appears under its final name only when
complete. Running the same command again resumes: finished shards are kept.

Labels are indexed in sorted name order (numerically when all names are integers). If DIR
already has a labels.txt (say, from converting the train split), its indices are reused, and a
label missing from it is an error.

Unreadable, empty and non-video inputs, CSV rows without a path or label, rows naming a
missing file and names or rows that are not UTF-8 text are skipped and reported; they never stop
the run. The output folder must not hold another conversion of the same split (other
`--num-shards`, other inputs or settings, or shards the converter did not write): the run then
refuses with one sentence instead of mixing them. Temporary `.NAME.tmp-PID` files that a killed
run left (its process no longer running) are removed; nothing else in DIR is ever deleted.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import multiprocessing
import os
import queue
import re
import sys
import time
from typing import Sequence

import numpy as np

from cvrl_jax import paths
from cvrl_jax import startup

VIDEOS_PER_SHARD = 200  # automatic shard count
MAX_AUTO_SHARDS = 1024


@dataclasses.dataclass(frozen=True)
class Settings:
  fps: float
  short_side: int
  jpeg_quality: int
  audio_rate: int = 0  # samples per second of the stored audio; 0: no audio
  audio_only: bool = False  # labelled sounds: records with the audio track and no frames


def settings_record(settings: Settings) -> dict:
  """The settings as a shard's metadata records them (without audio_rate when audio is off and
  without audio_only when False, so shards converted before those existed still resume)."""
  record = dataclasses.asdict(settings)
  if not record['audio_rate']:
    del record['audio_rate']
  if not record['audio_only']:
    del record['audio_only']
  return record


MIN_AUDIO_RATE, MAX_AUDIO_RATE = 1000, 384_000


def check_audio_rate(audio_rate) -> int:
  """A whole number of samples per second in [MIN_AUDIO_RATE, MAX_AUDIO_RATE], else ValueError."""
  whole = isinstance(audio_rate, (int, np.integer)) or (
      isinstance(audio_rate, float) and audio_rate.is_integer())
  if isinstance(audio_rate, bool) or not whole or not (
      MIN_AUDIO_RATE <= audio_rate <= MAX_AUDIO_RATE):
    raise ValueError(f'--audio-rate must be a whole number of samples per second (Hz) from '
                     f'{MIN_AUDIO_RATE} to {MAX_AUDIO_RATE}, e.g. 44100; got {audio_rate!r}.')
  return int(audio_rate)


@dataclasses.dataclass(frozen=True)
class Item:
  path: str
  label: str


# ------------------------------------------------------------------------------------------------
# Inputs.


def printable(text: str) -> str:
  """A name as text even when its bytes are not UTF-8 (those bytes shown as \\xNN)."""
  return text if is_utf8(text) else os.fsencode(text).decode('utf-8', 'backslashreplace')


def is_utf8(text: str) -> bool:
  """Whether a name read from the file system (or a CSV read with surrogateescape) is UTF-8."""
  try:
    text.encode('utf-8')
    return True
  except UnicodeEncodeError:
    return False


_NOT_UTF8 = 'the name is not UTF-8 text'


def list_folder(root: str) -> tuple[list[Item], list[dict]]:
  """Videos of a class-per-sub-folder tree; files outside class folders, and names that are not
  UTF-8 (labels and record paths are UTF-8), are reported as skipped."""
  items, skipped = [], []
  for entry in sorted(os.listdir(root)):
    path = os.path.join(root, entry)
    if entry.startswith('.'):
      continue
    if not is_utf8(entry):
      skipped.append({'path': printable(path), 'reason': f'{_NOT_UTF8} (a class folder: its '
                                                         'videos are skipped)'})
      continue
    if not os.path.isdir(path):
      skipped.append({'path': path, 'reason': 'not inside a class sub-folder'})
      continue
    for folder, dirs, files in os.walk(path):
      dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
      for f in sorted(files):
        if f.startswith('.'):
          continue
        if is_utf8(os.path.join(folder, f)):
          items.append(Item(os.path.join(folder, f), entry))
        else:
          skipped.append({'path': printable(os.path.join(folder, f)), 'reason': _NOT_UTF8})
  return items, skipped


def list_csv(csv_path: str) -> tuple[list[Item], list[dict]]:
  """Videos of a `path,label` CSV; rows without a path or label, or naming no file, are skipped."""
  base = os.path.dirname(os.path.abspath(csv_path))
  items, skipped = [], []
  with open(csv_path, newline='', encoding='utf-8', errors='surrogateescape') as f:
    for row_number, row in enumerate(csv.reader(f), start=1):
      cells = [c.strip() for c in row]
      if not any(cells):
        continue
      if row_number == 1 and [c.lower() for c in cells[:2]] == ['path', 'label']:
        continue
      where = f'{csv_path} row {row_number}'
      if not all(is_utf8(c) for c in cells):
        skipped.append({'path': where, 'reason': 'not UTF-8 text: '
                        + ','.join(printable(c) for c in cells)})
        continue
      if not cells[0]:
        skipped.append({'path': where, 'reason': 'no video path'})
        continue
      path = os.path.join(base, os.path.expanduser(cells[0]))
      if len(cells) < 2 or not cells[1]:
        skipped.append({'path': path, 'reason': f'no label ({where})'})
      elif not os.path.isfile(path):
        skipped.append({'path': path, 'reason': f'file not found ({where})'})
      else:
        items.append(Item(path, cells[1]))
  return items, skipped


# The ESC-50 layout (github.com/karolpiczak/ESC-50): SRC/audio/*.wav and SRC/meta/esc50.csv.
ESC50_CSV = os.path.join('meta', 'esc50.csv')
ESC50_AUDIO = 'audio'
ESC50_COLUMNS = ('filename', 'fold', 'target', 'category')


def is_esc50(source: str) -> bool:
  return (os.path.isfile(os.path.join(source, ESC50_CSV))
          and os.path.isdir(os.path.join(source, ESC50_AUDIO)))


def esc50_split(fold: int) -> str:
  """The split name of one ESC-50 fold's records: fold{k}."""
  return f'fold{fold}'


def list_esc50(source: str) -> tuple[dict[int, list[Item]], list[dict], list[str]]:
  """({fold: sounds}, skipped rows, label names by ESC-50 target) of an ESC-50 folder.

  Labels are the CSV's `category` names indexed by its `target` column (so label i is ESC-50's
  target i when every target 0..n-1 occurs, as in the released data). Rows naming a missing
  file, or without a whole-number fold and target, are skipped."""
  csv_path = os.path.join(source, ESC50_CSV)
  folds: dict[int, list[Item]] = {}
  skipped: list[dict] = []
  categories: dict[int, str] = {}
  with open(csv_path, newline='', encoding='utf-8') as f:
    reader = csv.DictReader(f)
    missing = [c for c in ESC50_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
      raise ValueError(f'{csv_path} lacks the ESC-50 column(s) {missing} (it needs '
                       f'{", ".join(ESC50_COLUMNS)}).')
    for row_number, row in enumerate(reader, start=2):
      where = f'{csv_path} row {row_number}'
      path = os.path.join(source, ESC50_AUDIO, (row['filename'] or '').strip())
      category = (row['category'] or '').strip()
      try:
        fold, target = int(row['fold']), int(row['target'])
      except (TypeError, ValueError):
        skipped.append({'path': where, 'reason': 'fold and target must be whole numbers'})
        continue
      if not (row['filename'] or '').strip() or not category:
        skipped.append({'path': where, 'reason': 'no filename or category'})
      elif categories.setdefault(target, category) != category:
        raise ValueError(f'{where}: target {target} is {category!r} here but '
                         f'{categories[target]!r} in an earlier row.')
      elif not os.path.isfile(path):
        skipped.append({'path': path, 'reason': f'file not found ({where})'})
      else:
        folds.setdefault(fold, []).append(Item(path, category))
  names = [categories[t] for t in sorted(categories)]
  if len(set(names)) != len(names):
    raise ValueError(f'{csv_path} gives one category several targets.')
  return folds, skipped, names


def list_inputs(source: str) -> tuple[list[Item], list[dict]]:
  if not os.path.exists(source):
    raise FileNotFoundError(f'The input {source} does not exist.')
  if os.path.isdir(source):
    return list_folder(source)
  if os.path.isfile(source):
    return list_csv(source)
  raise FileNotFoundError(f'Input {source} is neither a folder of class folders nor a CSV file.')


def _label_order(name: str):
  return (0, int(name), '') if name.isdigit() else (1, 0, name)


def label_names(items: Sequence[Item], existing: list[str] | None, labels_path: str) -> list[str]:
  """Names by label index: the existing labels.txt, or the sorted names of `items`."""
  names = sorted({item.label for item in items}, key=_label_order)
  if existing is None:
    return names
  missing = sorted(set(names) - set(existing), key=_label_order)
  if missing:
    raise ValueError(f'Labels {missing[:10]} are not in {labels_path}; convert into a new output '
                     'folder or add them to that file.')
  return existing


def assign_shards(items: Sequence[Item], num_shards: int, seed: int = 0) -> list[list[Item]]:
  """Items in a fixed pseudo-random order, dealt round-robin (shards mix classes)."""
  ordered = sorted(items, key=lambda item: item.path)
  order = np.random.default_rng(seed).permutation(len(ordered))
  return [[ordered[i] for i in order[s::num_shards]] for s in range(num_shards)]


# ------------------------------------------------------------------------------------------------
# Workers: one call writes one whole shard.

_progress = None  # a multiprocessing queue in worker processes


def _init_worker(progress) -> None:
  global _progress
  _progress = progress
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')


def convert_shard(shard: str, items: Sequence[Item], label_index: dict[str, int],
                  settings: Settings) -> dict:
  """Writes one shard and its metadata file; returns the metadata."""
  from cvrl_jax.data import dmvr  # pylint: disable=g-import-not-at-top
  from cvrl_jax.data import video  # pylint: disable=g-import-not-at-top
  skipped, without_audio = [], []
  with_audio = 0

  def audio_of(item, decoded):
    """Keyword arguments of the record's audio; {} (the video listed in without_audio) if none."""
    nonlocal with_audio
    try:
      track = video.decode_audio(item.path, sample_rate=settings.audio_rate,
                                 start_timestamp_us=decoded.start_timestamp_us,
                                 end_timestamp_us=decoded.end_timestamp_us)
      reason = ('no audio stream' if track is None else
                'the audio track ends before the first frame' if not track.samples.size else None)
    except video.AudioError as e:
      track, reason = None, str(e)
    if reason is not None:
      without_audio.append({'path': item.path, 'reason': reason})
      return {}
    with_audio += 1
    return {'audio': track.samples, 'audio_sample_rate': track.sample_rate}

  def sound_examples():
    """Audio-only records: the whole track, mono at audio_rate; a file without a decodable,
    non-empty track is skipped."""
    for item in items:
      try:
        track = video.decode_audio(item.path, sample_rate=settings.audio_rate)
        reason = ('no audio stream' if track is None else
                  'the audio track is empty' if not track.samples.size else None)
      except Exception as e:  # pylint: disable=broad-except  (as for videos: report, go on)
        track = None
        reason = str(e) if isinstance(e, video.AudioError) else f'{type(e).__name__}: {e}'
      if _progress is not None:
        _progress.put(1)
      if reason is not None:
        skipped.append({'path': item.path, 'reason': reason})
        continue
      yield dmvr.make_sequence_example(
          [], label_index[item.label], label_string=item.label, data_path=item.path,
          audio=track.samples, audio_sample_rate=track.sample_rate)

  def examples():
    for item in items:
      try:
        decoded = video.decode_video(item.path, fps=settings.fps, short_side=settings.short_side,
                                     jpeg_quality=settings.jpeg_quality)
      except Exception as e:  # pylint: disable=broad-except
        # One bad input must never stop a conversion: every failure is reported in the summary.
        reason = str(e) if isinstance(e, video.VideoError) else f'{type(e).__name__}: {e}'
        skipped.append({'path': item.path, 'reason': reason})
        decoded = None
      if _progress is not None:
        _progress.put(1)
      if decoded is not None:
        yield dmvr.make_sequence_example(
            decoded.jpeg_frames, label_index[item.label], label_string=item.label,
            data_path=item.path, start_timestamp_us=decoded.start_timestamp_us,
            end_timestamp_us=decoded.end_timestamp_us,
            **(audio_of(item, decoded) if settings.audio_rate else {}))

  meta = {'sources': [item.path for item in items], 'settings': settings_record(settings)}

  def record_meta(tmp, count):  # before the rename: a shard under its name always has its record
    meta.update(records=count, bytes=paths.size(tmp), skipped=skipped)
    if settings.audio_rate and not settings.audio_only:
      meta.update(with_audio=with_audio, without_audio=without_audio)
    dmvr.write_text_atomic(dmvr.meta_path(shard), json.dumps(meta))

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    dmvr.write_shard(shard, sound_examples() if settings.audio_only else examples(),
                     before_rename=record_meta)
  except tf.errors.OpError as e:
    from cvrl_jax.data import records  # pylint: disable=g-import-not-at-top
    raise OSError(f'Cannot write {shard} ({records.tf_error_text(e)}).') from None
  return meta


def _finished_meta(shard: str, items: Sequence[Item], settings: Settings) -> dict | None:
  """The metadata of a shard a previous run completed with the same inputs, else None."""
  from cvrl_jax.data import dmvr  # pylint: disable=g-import-not-at-top
  if not paths.exists(shard):
    return None
  if not paths.exists(dmvr.meta_path(shard)):
    raise ValueError(f'{shard} is not from this converter (it has no {dmvr.meta_path(shard)}); '
                     'move it away or use a new --output folder.')
  meta = paths.read_json(dmvr.meta_path(shard))
  if (meta.get('sources') != [item.path for item in items]
      or meta.get('settings') != settings_record(settings)):
    raise ValueError(f'{shard} was written from other inputs or settings; use a new --output '
                     'folder or delete the old shards.')
  return meta


class _InProcessProgress:
  """Stands in for the workers' progress queue when shards are written in this process."""

  def __init__(self, bar):
    self.put = bar.update


def _run_tasks(tasks, label_index, settings, workers, progress_bar) -> dict[str, dict]:
  global _progress
  if workers <= 1 or len(tasks) <= 1:
    saved, _progress = _progress, _InProcessProgress(progress_bar)
    try:
      return {shard: convert_shard(shard, items, label_index, settings) for shard, items in tasks}
    finally:
      _progress = saved
  context = multiprocessing.get_context('spawn')  # TensorFlow does not survive fork
  progress = context.Queue()
  with context.Pool(min(workers, len(tasks)), initializer=_init_worker,
                    initargs=(progress,)) as pool:
    pending = {shard: pool.apply_async(convert_shard, (shard, items, label_index, settings))
               for shard, items in tasks}
    results = {}
    while pending:
      try:
        progress_bar.update(progress.get(timeout=0.2))
      except queue.Empty:
        pass
      for shard in [s for s, r in pending.items() if r.ready()]:
        results[shard] = pending.pop(shard).get()  # re-raises a worker's exception
    while True:  # progress messages still in flight
      try:
        progress_bar.update(progress.get(timeout=0.05))
      except queue.Empty:
        break
  return results


# ------------------------------------------------------------------------------------------------
# The output folder: another conversion in it, a killed run's temporary files.

_SHARD_NAME = re.compile(r'^(?P<split>.+)-\d{5}-of-(?P<count>\d{5})\.tfrecord$')


def existing_shard_counts(output: str, split: str) -> dict[int, list[str]]:
  """{shard count: file names} of `split`'s shards and shard metadata already in `output`."""
  counts: dict[int, list[str]] = {}
  for name in paths.listdir(output):
    base = name[1:-len('.json')] if name.startswith('.') and name.endswith('.json') else name
    match = _SHARD_NAME.match(base)
    if match and match['split'] == split:
      counts.setdefault(int(match['count']), []).append(name)
  return counts


def remove_stale_temporaries(output: str) -> list[str]:
  """Removes the converter's own temporary files (a shard's, its metadata's, labels.txt's or a
  summary's `.tmp-{pid}`, dmvr.temporary_pid) left by a killed run: only those whose process is
  no longer running on this machine. Nothing else is ever removed."""
  from cvrl_jax import run_utils  # pylint: disable=g-import-not-at-top  (jax: only when needed)
  from cvrl_jax.data import dmvr  # pylint: disable=g-import-not-at-top
  removed = []
  for name in paths.listdir(output):
    pid = dmvr.temporary_pid(name)
    if pid is not None and not run_utils.pid_alive(pid):
      paths.remove(paths.join(output, name))
      removed.append(name)
  return removed


def _check_output(output: str, split: str, num_shards: int) -> int:
  """The shard count to write: `num_shards`, or (0) that of a conversion of `split` already in
  `output`; refuses a count other than the existing conversion's, which would mix the two."""
  existing = existing_shard_counts(output, split)
  if not num_shards and len(existing) == 1:
    return next(iter(existing))
  other = sorted(c for c in existing if c != num_shards)
  if num_shards and other:
    example = existing[other[0]][0]
    raise ValueError(
        f'{output} already holds a conversion of split {split!r} into {other[0]} shards (e.g. '
        f'{example}); run with --num-shards {other[0]} to resume it, or use a new --output '
        f'folder: {num_shards} more shards beside them would make every video read twice.')
  if not num_shards and other:
    raise ValueError(f'{output} holds shards of split {split!r} from conversions into '
                     f'{" and ".join(map(str, other))} shards; use a new --output folder.')
  return num_shards


# ------------------------------------------------------------------------------------------------
# The command.


def convert(source: str, output: str, *, fps: float = 10.0, short_side: int = 256,
            jpeg_quality: int = 90, num_shards: int = 0, workers: int = 0,
            split_name: str = 'train', audio: bool = False, audio_rate: int = 44_100,
            audio_only: bool = False, quiet: bool = False) -> dict:
  """Converts the videos of `source` into `output`; returns the summary (also written as JSON).

  `audio`: also store each video's audio track, mono at `audio_rate` samples per second.
  `audio_only`: `source` holds labelled sounds (class folders, a CSV, or the ESC-50 layout);
  each record holds the whole track at `audio_rate` and no frames. For ESC-50 every fold is
  written as its own split `fold{k}` (`split_name` is not used) and the returned summary is
  {'layout': 'esc50', 'output': ..., 'splits': {'fold1': summary, ...}}; CSV rows that name no
  existing file are listed among the skipped inputs of the first fold's summary."""
  if fps <= 0 or short_side < 0 or not 1 <= jpeg_quality <= 100:
    raise ValueError('Need --fps > 0, --short-side >= 0 and 1 <= --jpeg-quality <= 100.')
  audio_rate = check_audio_rate(audio_rate) if audio or audio_only else 0
  settings = Settings(fps=fps, short_side=short_side, jpeg_quality=jpeg_quality,
                      audio_rate=audio_rate, audio_only=audio_only)
  run = dict(num_shards=num_shards, workers=workers, quiet=quiet)
  if audio_only and os.path.isdir(source) and is_esc50(source):
    folds, skipped, names = list_esc50(source)
    if not folds:
      raise ValueError(f'No sounds found in {source} ({ESC50_CSV} names no existing file).')
    splits = {}
    for fold in sorted(folds):
      splits[esc50_split(fold)] = _convert_split(
          source, folds[fold], skipped if not splits else [], output, esc50_split(fold),
          settings, names=names, **run)
    return {'layout': 'esc50', 'output': paths.absolute(output), 'splits': splits}
  items, skipped = list_inputs(source)
  return _convert_split(source, items, skipped, output, split_name, settings, **run)


def _convert_split(source: str, items: list[Item], skipped: list[dict], output: str,
                   split_name: str, settings: Settings, *, num_shards: int, workers: int,
                   quiet: bool, names: list[str] | None = None) -> dict:
  """Writes one split's shards and summary; `names`: the label names by index, if the layout
  fixes them (ESC-50's targets), else the sorted names of the items' labels."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from cvrl_jax.data import dmvr  # pylint: disable=g-import-not-at-top

  start = time.time()
  unit = 'sound' if settings.audio_only else 'video'
  if not items:
    raise ValueError(f'No {unit}s found in {source}.')
  output = paths.absolute(output)
  skipped = list(skipped)
  try:
    paths.makedirs(output)
    removed = remove_stale_temporaries(output)
    num_shards = _check_output(output, split_name, num_shards)
    labels_path = paths.join(output, dmvr.LABELS_FILE)
    existing = dmvr.read_labels(output)
    if names is None:
      names = label_names(items, existing, labels_path)
    elif existing is not None and existing != names:
      raise ValueError(f'{labels_path} names other labels than {source}; convert into a new '
                       'output folder.')
    dmvr.write_labels(output, names)
  except OSError as e:
    raise ValueError(f'Cannot write to the output folder {output} '
                     f'({e.strerror or e}).') from None
  label_index = {name: i for i, name in enumerate(names)}

  num_shards = num_shards or min(MAX_AUTO_SHARDS, math.ceil(len(items) / VIDEOS_PER_SHARD))
  shards = [dmvr.shard_path(output, split_name, i, num_shards) for i in range(num_shards)]
  assignment = dict(zip(shards, assign_shards(items, num_shards)))
  results = {s: m for s in shards if (m := _finished_meta(s, assignment[s], settings)) is not None}
  tasks = [(s, assignment[s]) for s in shards if s not in results]
  done = sum(len(assignment[s]) for s in results)
  with tqdm(total=len(items), initial=done, unit=unit, desc=f'converting {split_name}',
            disable=quiet, file=sys.stderr) as bar:
    results.update(_run_tasks(tasks, label_index, settings, workers or os.cpu_count() or 1, bar))

  for shard in shards:
    skipped.extend(results[shard]['skipped'])
  summary = {
      'input': os.path.abspath(source), 'output': output, 'split': split_name,
      'fps': settings.fps, 'short_side': settings.short_side,
      'jpeg_quality': settings.jpeg_quality,
      'num_classes': len(names), 'num_shards': num_shards,
      'written': sum(results[s]['records'] for s in shards), 'skipped': skipped,
      'resumed_shards': num_shards - len(tasks), 'removed_temporary_files': removed,
      'shards': {os.path.basename(s): {'records': results[s]['records'],
                                       'bytes': results[s]['bytes']} for s in shards},
      'seconds': round(time.time() - start, 1),
  }
  if settings.audio_only:
    summary.update(audio_only=True, audio_rate=settings.audio_rate)
  elif settings.audio_rate:
    summary.update(audio_rate=settings.audio_rate,
                   with_audio=sum(results[s]['with_audio'] for s in shards),
                   without_audio=[v for s in shards for v in results[s]['without_audio']])
  dmvr.write_text_atomic(dmvr.summary_path(output, split_name), json.dumps(summary, indent=1))
  if not quiet:
    print(format_summary(summary))
  return summary


def format_summary(summary: dict, max_listed: int = 20) -> str:
  unit = 'sounds' if summary.get('audio_only') else 'videos'
  lines = [f"Wrote {summary['written']} {unit} ({summary['num_classes']} classes) to "
           f"{summary['num_shards']} shards in {summary['output']} "
           f"({summary['resumed_shards']} shards kept from an earlier run); "
           f"skipped {len(summary['skipped'])}."]
  removed = summary.get('removed_temporary_files', [])
  if removed:
    lines.append(f"  removed {len(removed)} temporary file(s) of a killed run: {', '.join(removed)}")
  for skip in summary['skipped'][:max_listed]:
    lines.append(f"  skipped {skip['path']}: {skip['reason']}")
  if len(summary['skipped']) > max_listed:
    lines.append(f"  ... and {len(summary['skipped']) - max_listed} more (see the summary JSON)")
  if summary.get('audio_only'):
    lines.append(f"Split {summary['split']}: audio only, at {summary['audio_rate']} Hz (records "
                 "without frames).")
  elif summary.get('audio_rate'):
    silent = summary['without_audio']
    lines.append(f"Audio at {summary['audio_rate']} Hz: {summary['with_audio']} videos with a "
                 f"track, {len(silent)} written without audio.")
    for entry in silent[:max_listed]:
      lines.append(f"  without audio {entry['path']}: {entry['reason']}")
    if len(silent) > max_listed:
      lines.append(f"  ... and {len(silent) - max_listed} more (see the summary JSON)")
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description='Convert videos to DMVR TFRecords.', epilog=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', required=True, help='folder of class sub-folders, or a CSV')
  parser.add_argument('--output', required=True, help='output folder')
  parser.add_argument('--fps', type=float, default=10.0, help='output frame rate (default 10)')
  parser.add_argument('--short-side', type=int, default=256, help='short side in pixels; 0 keeps')
  parser.add_argument('--jpeg-quality', type=int, default=90)
  parser.add_argument('--num-shards', type=int, default=0,
                      help=f'0: one per {VIDEOS_PER_SHARD} videos')
  parser.add_argument('--workers', type=int, default=0, help='worker processes; 0: one per core')
  parser.add_argument('--split-name', default='train', help='shard and summary name prefix')
  parser.add_argument('--audio', action='store_true',
                      help='also store each video\'s audio track (mono), DMVR\'s audio key')
  parser.add_argument('--audio-rate', type=float, default=44_100,
                      help='samples per second of the stored audio (default 44100)')
  parser.add_argument('--audio-only', action='store_true',
                      help='the input holds labelled sounds (class folders, a CSV or the ESC-50 '
                      'layout): records with the whole track and no frames')
  parser.add_argument('--verbosity', '-v', type=int, default=0,
                      help='1: also show TensorFlow\'s own start-up and warning lines')
  args = parser.parse_args(argv)
  startup.quiet_native_logs(args.verbosity)
  try:
    convert(args.input, args.output, fps=args.fps, short_side=args.short_side,
            jpeg_quality=args.jpeg_quality, num_shards=args.num_shards, workers=args.workers,
            split_name=args.split_name, audio=args.audio, audio_rate=args.audio_rate,
            audio_only=args.audio_only)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  except OSError as e:  # a write failing mid-run (a full disk, a folder made read-only)
    where = f' ({e.filename})' if e.filename else ''
    print(f'error: {e.strerror or e}{where}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
