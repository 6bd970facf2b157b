"""Inspect DMVR TFRecords: statistics and a contact sheet of the clip pairs pretraining samples.

  python -m cvrl_jax.inspect FILES... [--output sheet.png] [--num-videos 4]

Prints the number of videos, frames per video (min / median / max), for records with an audio
track (`convert --audio`) its sample rate and duration (min / median / max), and the label
histogram (with names from a labels.txt beside the files), and writes a PNG with, for a few videos, the
two CVRL views exactly as the pretraining input pipeline produces them (temporal pair sampling,
one random resized crop per clip; colour augmentation runs later, on the accelerator).
"""
from __future__ import annotations

import argparse
import collections
import sys
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

LABEL_WIDTH = 90  # pixels of text column in the contact sheet
MAX_COLUMNS = 8  # frames shown per clip


def dataset_statistics(files: Sequence[str], max_records: int = 0) -> dict:
  """{'num_videos', 'frames': int array per video, 'labels': Counter of first label index,
  'audio_samples': int array per video (0: no audio), 'audio_rates': the same, 0 if none}."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from cvrl_jax.data import dmvr  # pylint: disable=g-import-not-at-top
  from cvrl_jax.data import sources  # pylint: disable=g-import-not-at-top

  def summarise(record):
    parsed = dmvr.parse_sequence_example(record, frames_only=True, audio=True)
    return (tf.size(parsed['frames']), parsed['label'], tf.size(parsed['audio']),
            parsed['audio_sample_rate'])

  records = tf.data.TFRecordDataset(list(files))
  if max_records > 0:
    records = records.take(max_records)
  frames, labels, samples, rates = [], collections.Counter(), [], []
  try:
    for count, label, audio, rate in records.map(
        summarise, num_parallel_calls=tf.data.AUTOTUNE).batch(1024).as_numpy_iterator():
      frames.extend(count.tolist())
      labels.update(label.tolist())
      samples.extend(audio.tolist())
      rates.extend(rate.tolist())
  except tf.errors.DataLossError as e:
    bad = sources.find_corrupt_file(files) or 'one of the files'
    raise sources.corrupt_file_error(bad, e) from None
  return {'num_videos': len(frames), 'frames': np.asarray(frames, np.int64), 'labels': labels,
          'audio_samples': np.asarray(samples, np.int64), 'audio_rates': np.asarray(rates, np.int64)}


def format_audio(stats: dict) -> str | None:
  """'audio: ...' (how many videos have a track, its rates and durations); None if none has."""
  has = (stats['audio_samples'] > 0) & (stats['audio_rates'] > 0)
  if not has.any():
    return None
  seconds = stats['audio_samples'][has] / stats['audio_rates'][has]
  rates = ', '.join(f'{r} Hz' for r in np.unique(stats['audio_rates'][has]))
  return (f"audio in {int(has.sum())} of {stats['num_videos']} videos at {rates}: duration "
          f'min {seconds.min():.2f} s, median {np.median(seconds):.2f} s, max {seconds.max():.2f} s')


def format_statistics(stats: dict, num_files: int, names: list[str] | None) -> str:
  lines = [f"{stats['num_videos']} videos in {num_files} file(s)"]
  if stats['num_videos']:
    frames = stats['frames']
    lines.append(f'frames per video: min {frames.min()}, median {np.median(frames):g}, '
                 f'max {frames.max()}')
    audio = format_audio(stats)
    if audio:
      lines.append(audio)
  labels = stats['labels']
  lines.append(f'labels ({len(labels)} distinct):')
  most = max(labels.values(), default=1)
  for label in sorted(labels):
    name = names[label] if names and 0 <= label < len(names) else ''
    bar = '#' * max(1, round(40 * labels[label] / most))
    lines.append(f'  {label:>5} {name[:24]:<24} {labels[label]:>8}  {bar}')
  return '\n'.join(lines)


def sample_views(files: Sequence[str], *, num_videos: int, num_frames: int, frame_stride: int,
                 image_size: int, seed: int) -> dict[str, np.ndarray]:
  """One pretraining batch of `num_videos` videos from the real pipeline (CVRL defaults)."""
  from cvrl_jax import config_lib  # pylint: disable=g-import-not-at-top
  from cvrl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from cvrl_jax.data import plan as plan_lib  # pylint: disable=g-import-not-at-top
  cfg = config_lib.data_config()
  cfg.train_files = ','.join(files)
  cfg.num_frames, cfg.frame_stride, cfg.image_size = num_frames, frame_stride, image_size
  cfg.shuffle_buffer = max(num_videos, 16)
  iterator = pipeline.make_pretrain_iterator(
      cfg, plan_lib.simple_plan('cvrl_pair', 2), global_batch_size=num_videos, seed=seed,
      process_index=0, process_count=1)
  return next(iterator)


def contact_sheet(batch: dict[str, np.ndarray], names: list[str] | None) -> Image.Image:
  """Rows of frames: for every video, view 1 then view 2 (at most MAX_COLUMNS frames each)."""
  video = batch['video']  # [B, V, T, H, W, 3]
  num_videos, num_views, num_frames, height, width, _ = video.shape
  columns = np.unique(np.linspace(0, num_frames - 1, min(num_frames, MAX_COLUMNS)).astype(int))
  gap = 4
  sheet = Image.new('RGB', (LABEL_WIDTH + len(columns) * (width + gap),
                            num_videos * (num_views * (height + gap) + gap)), 'white')
  draw = ImageDraw.Draw(sheet)
  y = 0
  for b in range(num_videos):
    label = int(batch['label'][b])
    name = names[label] if names and 0 <= label < len(names) else str(label)
    for v in range(num_views):
      draw.text((4, y + 4), f'video {b}' if v == 0 else '', fill='black')
      draw.text((4, y + 18), f'{name[:12]}' if v == 0 else '', fill='black')
      draw.text((4, y + height - 14), f'view {v + 1}', fill='gray')
      for c, t in enumerate(columns):
        sheet.paste(Image.fromarray(video[b, v, t]), (LABEL_WIDTH + c * (width + gap), y))
      y += height + gap
    y += gap
  return sheet


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('files', nargs='+', help='TFRecord files or glob patterns')
  parser.add_argument('--output', default='contact_sheet.png', help='PNG contact sheet path')
  parser.add_argument('--num-videos', type=int, default=4)
  parser.add_argument('--num-frames', type=int, default=16)
  parser.add_argument('--frame-stride', type=int, default=2)
  parser.add_argument('--image-size', type=int, default=112, help='crop size shown (pixels)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--max-records', type=int, default=0, help='statistics over at most this '
                      'many records (0: all)')
  parser.add_argument('--verbosity', '-v', type=int, default=0,
                      help='1: also show TensorFlow\'s own start-up and warning lines')
  args = parser.parse_args(argv)
  from cvrl_jax import startup  # pylint: disable=g-import-not-at-top
  startup.quiet_native_logs(args.verbosity)
  from cvrl_jax import paths  # pylint: disable=g-import-not-at-top
  from cvrl_jax.data import dmvr  # pylint: disable=g-import-not-at-top
  from cvrl_jax.data import sources  # pylint: disable=g-import-not-at-top
  try:
    files = sources.resolve_files(','.join(args.files))
    names = dmvr.read_labels(paths.parent(files[0]))
    stats = dataset_statistics(files, args.max_records)
    print(format_statistics(stats, len(files), names))
    if stats['num_videos'] and args.num_videos > 0:
      batch = sample_views(files, num_videos=min(args.num_videos, stats['num_videos']),
                           num_frames=args.num_frames, frame_stride=args.frame_stride,
                           image_size=args.image_size, seed=args.seed)
      contact_sheet(batch, names).save(args.output)
      print(f'contact sheet of {len(batch["label"])} videos x 2 views: {args.output}')
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
