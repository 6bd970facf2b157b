"""CVRL, R3D-50, Kinetics-600, 200 epochs = 71,488 steps (docs/recipes/cvrl.md).

Same recipe as cvrl_r3d50_k400.py on K600's 366,016 training videos; the reference runs 71,488
steps (366,016 x 200 / 1024, rounded up).

  python -m cvrl_jax.main --config=configs/cvrl_r3d50_k600.py --workdir=gs://YOUR_BUCKET/runs/k600
"""
import ml_collections

from cvrl_jax import config_lib


def get_config() -> ml_collections.ConfigDict:
  config = config_lib.base_config()
  # Kinetics-600 as DMVR TFRecords (`python -m cvrl_jax.convert`). Replace YOUR_BUCKET.
  config.data.train_files = 'gs://YOUR_BUCKET/kinetics600/train-*.tfrecord'
  config.data.eval_files = 'gs://YOUR_BUCKET/kinetics600/val-*.tfrecord'
  config.data.num_classes = 600
  config.data.num_train_examples = 366_016
  config.num_epochs = 200
  config.num_train_steps = 71_488  # the reference's step count for 200 epochs
  return config
