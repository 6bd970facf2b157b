"""The TF Model Garden's own R3D-50 (CVRL's backbone): a checkpoint, its variable list and features.

Runs in a virtual environment with tf-models-official (it brings its own TensorFlow; never
install it beside cvrl_jax's):

  python3 -m venv /work/venvs/tfmg && /work/venvs/tfmg/bin/pip install tf-models-official
  /work/venvs/tfmg/bin/python tools/model_garden_reference.py --output=/tmp/mg_reference

Builds `official.vision.modeling.backbones.ResNet3D` with the block specs of the CVRL experiment
configs (official/projects/video_ssl/configs/experiments: temporal kernels 1, 1, 3, 3 per stage,
stem (5, 7, 7) stride (2, 2, 2), stem pool temporal stride 1, BN momentum 0.99 / epsilon 1e-3),
gives every variable random non-trivial values (BN statistics included), and writes to OUTPUT:

  ckpt-1.*            tf.train.Checkpoint(backbone=...).save(): the layout of the released
                      CVRL backbones (task.init_checkpoint_modules='backbone' reads them so);
  variables.json      [[name, shape], ...] of that checkpoint (tests/data/ keeps a copy);
  reference.npz       'clips' [N, T, H, W, 3] in [0, 1] and 'features' [N, 2048]: the Model
                      Garden's pooled endpoint '5' (GlobalAveragePooling3D, as VideoSSLModel),
                      BN in inference mode.

tools/crosscheck_model_garden.py (run with cvrl_jax's environment) imports the checkpoint and
compares features.
"""
import argparse
import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from official.vision.modeling.backbones import resnet_3d  # noqa: E402

CVRL_TEMPORAL_KERNELS = [(1, 1, 1), (1, 1, 1, 1), (3, 3, 3, 3, 3, 3), (3, 3, 3)]


def build_backbone():
  return resnet_3d.ResNet3D(
      model_id=50, temporal_strides=[1, 1, 1, 1], temporal_kernel_sizes=CVRL_TEMPORAL_KERNELS,
      use_self_gating=[False] * 4,
      input_specs=tf.keras.layers.InputSpec(shape=[None, None, None, None, 3]),
      stem_conv_temporal_kernel_size=5, stem_conv_temporal_stride=2,
      stem_pool_temporal_stride=1, norm_momentum=0.99, norm_epsilon=1e-3)


def randomise(backbone, seed: int) -> None:
  rng = np.random.default_rng(seed)
  for v in backbone.variables:
    shape = v.shape.as_list()
    name = v.name
    if 'moving_variance' in name:
      value = rng.uniform(0.5, 2.0, shape)
    elif 'moving_mean' in name or 'beta' in name:
      value = rng.normal(0, 0.1, shape)
    elif 'gamma' in name:
      value = rng.uniform(0.5, 1.5, shape)
    else:  # kernels: variance 1 / fan_in keeps activations O(1) through 50 layers
      value = rng.normal(0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape)
    v.assign(value.astype(np.float32))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--output', required=True)
  parser.add_argument('--clips', type=int, default=2)
  parser.add_argument('--frames', type=int, default=16)
  parser.add_argument('--size', type=int, default=112)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  os.makedirs(args.output, exist_ok=True)

  backbone = build_backbone()
  randomise(backbone, args.seed)
  num_params = int(sum(np.prod(v.shape) for v in backbone.variables))
  prefix = tf.train.Checkpoint(backbone=backbone).save(os.path.join(args.output, 'ckpt'))
  variables = [[name, list(shape)] for name, shape in tf.train.list_variables(prefix)]
  with open(os.path.join(args.output, 'variables.json'), 'w') as f:
    json.dump({'model': 'official.vision.modeling.backbones.ResNet3D (model_id 50, CVRL specs)',
               'tf_models_official': _version('tf-models-official'),
               'tensorflow': tf.__version__, 'num_model_variables': len(backbone.variables),
               'num_values': num_params, 'variables': variables}, f, indent=1)

  rng = np.random.default_rng(args.seed + 1)
  clips = rng.uniform(0, 1, (args.clips, args.frames, args.size, args.size, 3)).astype(np.float32)
  endpoints = backbone(tf.constant(clips), training=False)
  features = tf.keras.layers.GlobalAveragePooling3D()(endpoints[max(endpoints.keys())]).numpy()
  np.savez(os.path.join(args.output, 'reference.npz'), clips=clips, features=features)
  print(f'Model Garden R3D-50: {len(backbone.variables)} variables, {num_params:,} values; '
        f'checkpoint {prefix} ({len(variables)} entries); features {features.shape}')


def _version(package: str) -> str:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  return metadata.version(package)


if __name__ == '__main__':
  main()
