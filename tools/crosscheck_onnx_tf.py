"""ONNX (onnxruntime) and TensorFlow SavedModel exports give our features: figures in BENCHMARKS.md.

  PYTHONPATH=. python tools/crosscheck_onnx_tf.py --init_checkpoint=EXPORT [--frames=16]

Exports EXPORT with `python -m cvrl_jax.export_onnx` and `python -m cvrl_jax.export_tf` (the
real command lines), reloads each (onnxruntime's CPU provider; tf.saved_model.load) and compares
their features of random clips with the JAX encoder's float32 features: clips of 96 x 96 and
96 x 160 pixels (SavedModel sizes are multiples of 32), and for ONNX also an odd 113 x 111.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--init_checkpoint', required=True)
  parser.add_argument('--frames', type=int, default=16)
  args = parser.parse_args()
  work = tempfile.mkdtemp(prefix='onnx_tf_check_')
  for module in ('export_onnx', 'export_tf'):
    command = [sys.executable, '-m', f'cvrl_jax.{module}',
               f'--init_checkpoint={args.init_checkpoint}', f'--output={work}/{module}']
    print(' '.join(command))
    subprocess.run(command, check=True, cwd=REPO_ROOT)

  from cvrl_jax import startup  # pylint: disable=g-import-not-at-top
  startup.configure_process()
  import jax  # pylint: disable=g-import-not-at-top
  import onnxruntime  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from cvrl_jax import export_common  # pylint: disable=g-import-not-at-top
  backbone, variables, model_cfg = export_common.load_checkpoint(args.init_checkpoint)
  forward = jax.jit(lambda v, x: backbone.apply(v, x, train=False))
  session = onnxruntime.InferenceSession(f'{work}/export_onnx/model.onnx',
                                         providers=['CPUExecutionProvider'])
  saved = tf.saved_model.load(f'{work}/export_tf/saved_model')
  rng = np.random.default_rng(0)
  print(f'R3D-{model_cfg.depth} width {model_cfg.width_multiplier:g}')
  for size in ((96, 96), (96, 160), (113, 111)):
    x = rng.uniform(0, 1, (2, args.frames) + size + (3,)).astype(np.float32)
    ours = np.asarray(forward(variables, x))
    scale = np.abs(ours).max()
    runs = {'onnx': lambda: session.run(['features'], {'clips': x})[0]}
    if size[0] % 32 == 0 and size[1] % 32 == 0:
      runs['savedmodel'] = lambda: saved.features(tf.constant(x)).numpy()
    for name, run in runs.items():
      diff = np.abs(run() - ours).max()
      print(f'{name} clips {x.shape}: max abs diff {diff:.3g}, relative to max |feature| '
            f'{scale:.3g}: {diff / scale:.3g}')


if __name__ == '__main__':
  main()
