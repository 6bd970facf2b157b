"""Features of every video in DMVR TFRecords, from the command line.

    python -m cvrl_jax.extract --init_checkpoint=EXPORT_OR_WORKDIR \
        --files='DATA/test-*.tfrecord' --output=features.npz [--views=test_views] [--per_clip]

One row per video, in file order: 'feature' (float32 [C], the backbone's features averaged over
the video's views, as the kNN and linear-probe jobs average them), 'path' (the record's
clip/data_path: the source video for files written by cvrl_jax.convert), 'label' (int, -1 when
the record has none) and 'label_string'; with --per_clip also 'clip_features' [V, C]. Views are
the evaluation jobs' (cvrl_jax.data.clips): 'test_views' (temporal x spatial crops, defaults of
config.data: 10 x 3 clips of 32 frames at stride 2, short side 256, 256-pixel crops) or
'center_clip' (the centred clip, the kNN memory bank's).

`--output` ending in .npz writes arrays 'feature', 'path', 'label', 'label_string' (and
'clip_features'); ending in .parquet writes one row per video with the same columns (pyarrow).

Progress and resume: the files are processed one at a time; each file's features go to
OUTPUT.parts/NNNNN.npz as soon as it is done, with OUTPUT.parts/progress.json recording the
settings and the finished files. Running the same command again skips the finished files. When
all are done, OUTPUT is written (it must not exist yet) and the parts folder is removed. Records
without frames are skipped and counted.
"""
import functools
import hashlib
import json
import os
import time
from typing import Any, Dict, List, Mapping

from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from cvrl_jax import config_lib
from cvrl_jax import export
from cvrl_jax import export_common
from cvrl_jax import paths
from cvrl_jax.evaluate import features as features_lib

WRITER = 'extract'
VIEWS = ('test_views', 'center_clip')
FORMATS = ('.npz', '.parquet')
PROGRESS_FILE = 'progress.json'
PARTS_SUFFIX = '.parts'


def view_settings(views: str, **overrides) -> Dict[str, Any]:
  """The clip settings of `views`: config.data's evaluation defaults, then `overrides`."""
  d = config_lib.data_config()
  settings = {'views': views, 'num_frames': int(d.eval_num_frames),
              'frame_stride': int(d.eval_frame_stride), 'resize': int(d.eval_resize)}
  if views == 'test_views':
    settings.update(crop=int(d.eval_crop_size), temporal_views=int(d.eval_num_temporal_views),
                    spatial_views=int(d.eval_num_spatial_views))
  elif views == 'center_clip':
    settings.update(crop=int(d.eval_image_size))
  else:
    raise ValueError(f'--views must be one of {VIEWS}, got {views!r}.')
  for key, value in overrides.items():
    if value is not None:
      if key not in settings:
        raise ValueError(f'--{key} does not apply to --views={views}.')
      settings[key] = int(value)
  for key, value in settings.items():
    if key != 'views' and value < 1:
      raise ValueError(f'--{key} must be a positive integer, got {value}.')
  if settings['crop'] > settings['resize']:
    raise ValueError(f'--crop ({settings["crop"]}) must not exceed --resize '
                     f'({settings["resize"]}).')
  return settings


def _views_fn(settings: Mapping[str, Any]):
  from cvrl_jax.data import clips  # pylint: disable=g-import-not-at-top
  s = settings
  if s['views'] == 'test_views':
    return clips.test_views_fn(num_temporal=s['temporal_views'], num_spatial=s['spatial_views'],
                               clip_len=s['num_frames'], stride=s['frame_stride'],
                               resize=s['resize'], crop=s['crop'], jpeg=True)
  return clips.center_clip_fn(clip_len=s['num_frames'], stride=s['frame_stride'],
                              resize=s['resize'], size=s['crop'], jpeg=True)


def file_batches(path: str, settings: Mapping[str, Any], batch_size: int):
  """Batches of {'video' uint8 [B, V, T, H, W, 3], 'label', 'label_string', 'path'} of one
  file, records without frames left out."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from cvrl_jax.data import dmvr  # pylint: disable=g-import-not-at-top
  views, shape = _views_fn(settings)

  def process(record):
    parsed = dmvr.parse_sequence_example(record)
    return {'video': tf.ensure_shape(views(parsed['frames'], None), shape),
            'label': parsed['label'], 'label_string': parsed['label_string'],
            'path': parsed['data_path']}

  def has_frames(record):
    return tf.size(dmvr.parse_sequence_example(record, frames_only=True)['frames']) > 0

  records = tf.data.TFRecordDataset(path)
  dataset = records.filter(has_frames).map(process, num_parallel_calls=tf.data.AUTOTUNE,
                                           deterministic=True)
  skipped = records.filter(lambda r: tf.logical_not(has_frames(r)))
  return dataset.batch(batch_size).prefetch(2), skipped


@functools.lru_cache(maxsize=None)
def _features_fn(backbone):
  """Jitted per-view features; one per architecture in a process (runs reuse compilations)."""
  return jax.jit(lambda v, video: features_lib.backbone_features(backbone, v, video))


class Extractor:
  """Jitted features of a batch: averaged over views and, on request, per view."""

  def __init__(self, backbone, variables, batch_size: int):
    self.variables = variables
    self.batch_size = batch_size
    self._features = _features_fn(backbone)

  def __call__(self, video: np.ndarray) -> np.ndarray:
    """uint8 [B, V, T, H, W, 3] -> float32 [B, V, C]; a short batch is padded to batch_size
    (one compiled shape) and the padding dropped."""
    n = video.shape[0]
    if n < self.batch_size:
      video = np.concatenate([video, np.zeros((self.batch_size - n,) + video.shape[1:],
                                              video.dtype)])
    return np.asarray(self._features(self.variables, jnp.asarray(video)))[:n]


def extract_file(extractor: Extractor, path: str, settings: Mapping[str, Any], per_clip: bool
                 ) -> Dict[str, np.ndarray]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  dataset, skipped = file_batches(path, settings, extractor.batch_size)
  out: Dict[str, List[np.ndarray]] = {'feature': [], 'clip_features': [], 'label': [],
                                      'label_string': [], 'path': []}
  try:
    for batch in dataset.as_numpy_iterator():
      clip_features = extractor(batch['video'])
      out['feature'].append(clip_features.mean(axis=1))
      if per_clip:
        out['clip_features'].append(clip_features)
      out['label'].append(batch['label'].astype(np.int32))
      out['label_string'].append(np.array([s.decode('utf-8') for s in batch['label_string']]))
      out['path'].append(np.array([s.decode('utf-8') for s in batch['path']]))
    num_skipped = sum(1 for _ in skipped)
  except tf.errors.DataLossError as e:
    raise ValueError(f'{path} is not a readable TFRecord file (corrupt or truncated).') from e
  except tf.errors.InvalidArgumentError as e:
    raise ValueError(f'{path} holds a record that is not a DMVR video record or has an '
                     f'undecodable frame ({e.message.splitlines()[0]}).') from e
  if not per_clip:
    del out['clip_features']
  result = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in out.items()}
  result['num_skipped'] = np.asarray(num_skipped)
  export_common.check_finite([('features', result['feature'])], f'features of {path}')
  return result


# ------------------------------------------------------------------------------------------------
# Parts, progress and the final file.
# ------------------------------------------------------------------------------------------------
class Progress:
  """OUTPUT.parts/: one npz per finished input file and progress.json naming them."""

  def __init__(self, output: str, record: Dict[str, Any]):
    self.dir = output + PARTS_SUFFIX
    self.record = dict(record, writer=WRITER, done={})
    progress_file = os.path.join(self.dir, PROGRESS_FILE)
    if os.path.isdir(self.dir) and os.listdir(self.dir):
      try:
        previous = json.loads(open(progress_file, encoding='utf-8').read())
      except (OSError, ValueError) as e:
        raise ValueError(f'{self.dir} exists and was not written by cvrl_jax.extract; move it '
                         f'or choose another --output.') from e
      if previous.get('writer') != WRITER or previous.get('key') != record['key']:
        raise ValueError(f'{self.dir} holds the progress of an extraction with other settings, '
                         f'checkpoint or files; remove it or choose another --output.')
      foreign = set(os.listdir(self.dir)) - set(previous['done'].values()) - {PROGRESS_FILE}
      foreign = {name for name in foreign if not name.startswith('.')}
      if foreign:
        raise ValueError(f'{self.dir} holds files cvrl_jax.extract did not write '
                         f'({sorted(foreign)[0]}); move them or choose another --output.')
      self.record['done'] = previous['done']
    os.makedirs(self.dir, exist_ok=True)

  def is_done(self, path: str) -> bool:
    return path in self.record['done']

  def save(self, index: int, path: str, part: Mapping[str, np.ndarray]) -> None:
    name = f'{index:05d}.npz'
    export_common.atomic_write(os.path.join(self.dir, name),
                               lambda tmp: _savez(tmp, part))
    self.record['done'][path] = name
    export_common.atomic_write(os.path.join(self.dir, PROGRESS_FILE), lambda tmp: open(
        tmp, 'w', encoding='utf-8').write(json.dumps(self.record, indent=1, sort_keys=True)))

  def load(self, files: List[str]) -> List[Dict[str, np.ndarray]]:
    return [dict(np.load(os.path.join(self.dir, self.record['done'][f]))) for f in files]

  def remove(self) -> None:
    for name in set(self.record['done'].values()) | {PROGRESS_FILE}:
      target = os.path.join(self.dir, name)
      if os.path.exists(target):
        os.unlink(target)
    if not os.listdir(self.dir):
      os.rmdir(self.dir)


def _savez(path: str, arrays: Mapping[str, np.ndarray]) -> None:
  with open(path, 'wb') as f:
    np.savez(f, **arrays)


def _arrow_column(pa, values: np.ndarray):
  """A NumPy column as Arrow: rows of a [N, ...] array become (nested) fixed-size lists."""
  if values.ndim == 1:
    return pa.array(values)
  column = pa.array(values.reshape(-1))
  for size in reversed(values.shape[1:]):
    column = pa.FixedSizeListArray.from_arrays(column, size)
  return column


def write_output(output: str, parts: List[Dict[str, np.ndarray]]) -> int:
  parts = [p for p in parts if len(p['label'])]
  if not parts:
    raise ValueError('The files hold no video records with frames; nothing to write.')
  columns = [k for k in parts[0] if k != 'num_skipped']
  merged = {k: np.concatenate([p[k] for p in parts]) for k in columns}
  if output.endswith('.npz'):
    export_common.atomic_write(output, lambda tmp: _savez(tmp, merged))
  else:
    try:
      import pyarrow as pa  # pylint: disable=g-import-not-at-top
      import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ValueError('Writing Parquet needs pyarrow (pip install pyarrow); or give an --output '
                       'ending in .npz.') from e
    table = pa.table({k: _arrow_column(pa, v) for k, v in merged.items()})
    export_common.atomic_write(output, lambda tmp: pq.write_table(table, tmp))
  return len(merged['feature'])


def extract(init_checkpoint: str, files: str, output: str, *, views: str = 'test_views',
            per_clip: bool = False, batch_size: int = 8, **view_overrides) -> str:
  """Writes the features of every video in `files` to `output`; returns a one-line summary."""
  from cvrl_jax.data import sources  # pylint: disable=g-import-not-at-top
  if not output or not output.endswith(FORMATS):
    raise ValueError(f'--output must end in one of {FORMATS}, got {output!r}.')
  if paths.is_url(output):
    raise ValueError(f'--output must be a local file, got {output}: the parts that make a run '
                     'resumable are kept beside it (copy the file to the bucket afterwards).')
  output = os.path.abspath(output)
  if os.path.exists(output):
    raise ValueError(f'{output} already exists; choose another --output.')
  if batch_size < 1:
    raise ValueError(f'--batch_size must be positive, got {batch_size}.')
  settings = view_settings(views, **view_overrides)
  inputs = sources.resolve_files(files)
  backbone, variables, model_cfg = export_common.load_checkpoint(init_checkpoint)
  key = hashlib.sha256(json.dumps([os.path.abspath(init_checkpoint), inputs, settings, per_clip],
                                  sort_keys=True).encode()).hexdigest()[:16]
  progress = Progress(output, {'key': key, 'settings': settings, 'checkpoint': init_checkpoint,
                               'files': inputs, 'per_clip': per_clip})
  extractor = Extractor(backbone, variables, batch_size)
  start, videos = time.time(), 0
  for index, path in enumerate(inputs):
    if progress.is_done(path):
      logging.info('[%d/%d] %s: done in an earlier run.', index + 1, len(inputs), path)
      continue
    part = extract_file(extractor, path, settings, per_clip)
    progress.save(index, path, part)
    videos += len(part['feature'])
    message = (f'[{index + 1}/{len(inputs)}] {path}: {len(part["feature"])} videos '
               f'({int(part["num_skipped"])} without frames skipped), '
               f'{videos / (time.time() - start):.2f} videos/s')
    logging.info(message)
  parts = progress.load(inputs)
  count = write_output(output, parts)
  skipped = sum(int(p['num_skipped']) for p in parts)
  progress.remove()
  return (f'Wrote the {export.describe(model_cfg)} features of {count} videos '
          f'({skipped} skipped) to {output}')


# ------------------------------------------------------------------------------------------------
# Command line.
# ------------------------------------------------------------------------------------------------
VIEW_FLAGS = ('num_frames', 'frame_stride', 'resize', 'crop', 'temporal_views', 'spatial_views')


def _define_flags() -> None:
  export_common.define_checkpoint_flags('Output file, .npz or .parquet (must not exist).')
  flags.DEFINE_string('files', None, 'DMVR TFRecords: glob(s), comma-separated.', required=True)
  flags.DEFINE_enum('views', 'test_views', VIEWS, 'Which clips of each video are averaged.')
  flags.DEFINE_bool('per_clip', False, 'Also write every view\'s features (clip_features).')
  flags.DEFINE_integer('batch_size', 8, 'Videos per forward pass.')
  for name in VIEW_FLAGS:
    flags.DEFINE_integer(name, None, f'Clip setting {name} (default: config.data\'s eval value).')


def main(argv) -> None:
  f = flags.FLAGS
  export_common.run(lambda: extract(
      f.init_checkpoint, f.files, f.output, views=f.views, per_clip=f.per_clip,
      batch_size=f.batch_size, **{name: f[name].value for name in VIEW_FLAGS}), argv)


if __name__ == '__main__':
  export_common.start(_define_flags, main)
