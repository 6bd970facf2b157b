"""Host input throughput per core of the TF Model Garden's own CVRL pretraining input.

  /work/venvs/tfmg/bin/python bench/model_garden_input.py --files A.tfrecord,B.tfrecord [--json -]

The companion of bench/input_pipeline.py (`--model-garden-python=PYTHON` runs this script on the
records it wrote, so both figures come from one run on the same data). It needs
`tf-models-official` and the TensorFlow it brings, in their own virtual environment: never in
ours, and cvrl_jax does not import it, nor this script cvrl_jax.

The input is built the way the Model Garden's video_ssl pretraining task builds it: the
experiment config `video_ssl_pretrain_kinetics400` with its defaults (CVRL pairs of 16 frames at
stride 2, 224 x 224, float32, shuffle buffer 64, 10 files interleaved), only the record files
and the batch size overridden, and `VideoSSLPretrainTask.build_inputs` (its DMVR decoder, its
CVRL parser with host colour jitter, grayscale, blur and solarisation, its post-batch step that
puts the two views of a video into the batch dimension). Our records are DMVR records, whose
keys `image/encoded` and `clip/label/index` are the config's defaults, so nothing is mapped.

Timing is the same as input_pipeline.py's: TensorFlow limited to --threads threads (tf.data
private pool, one thread per op), clips per second of process CPU time (user + system).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # noqa: E402
from official.core import exp_factory  # noqa: E402
from official.projects.video_ssl.tasks import pretrain  # noqa: E402  (also registers the configs)

EXPERIMENT = 'video_ssl_pretrain_kinetics400'


def model_garden_dataset(files: list[str], batch: int) -> tf.data.Dataset:
  """The Model Garden's CVRL pretraining input on `files`, `batch` videos (2 clips each)."""
  task_config = exp_factory.get_exp_config(EXPERIMENT).task
  task_config.train_data.input_path = ','.join(files)
  task_config.train_data.global_batch_size = batch
  task = pretrain.VideoSSLPretrainTask(task_config)
  return task.build_inputs(task_config.train_data)


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def measure(dataset: tf.data.Dataset, threads: int, warmup: int, batches: int) -> dict:
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  iterator = iter(dataset.with_options(options))
  for _ in range(warmup):
    features, _ = next(iterator)
  clips = features['image']
  clips_per_batch = int(clips.shape[0])
  wall, cpu = time.perf_counter(), _cpu_seconds()
  for _ in range(batches):
    next(iterator)
  wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
  total = clips_per_batch * batches
  return {'clips': total, 'wall_clips_per_s': total / wall, 'clips_per_cpu_s': total / cpu,
          'bytes_per_clip': int(clips[0].numpy().nbytes), 'dtype': clips.dtype.name,
          'clip_shape': [int(d) for d in clips.shape[1:]],
          'tensorflow': tf.__version__, 'experiment': EXPERIMENT}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--files', required=True, help='comma-separated DMVR record files')
  parser.add_argument('--threads', type=int, default=1, help='TensorFlow threads')
  parser.add_argument('--batch', type=int, default=8, help='videos per batch (2 clips each)')
  parser.add_argument('--batches', type=int, default=8, help='timed batches')
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--json', default='', help="'-' also prints the result as one line "
                      "'JSON {...}'")
  args = parser.parse_args(argv)
  tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  tf.config.threading.set_intra_op_parallelism_threads(args.threads)
  files = [f for f in args.files.split(',') if f]
  result = measure(model_garden_dataset(files, args.batch), args.threads, args.warmup,
                   args.batches)
  print(f"Model Garden ({EXPERIMENT}), {args.threads} thread(s): "
        f"{result['clips_per_cpu_s']:.1f} clips/s/core, "
        f"{result['wall_clips_per_s']:.1f} clips/s wall")
  if args.json == '-':
    print('JSON ' + json.dumps(result))


if __name__ == '__main__':
  main()
