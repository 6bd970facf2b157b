"""CVRL, R3D-152 with 2x filters, Kinetics-600: the paper's largest model (72.9% K600 linear).

The K600 recipe of cvrl_r3d50_k600.py with a deeper, twice-as-wide backbone (about 8x the
parameters of R3D-50). Rematerialisation trades compute for activation memory; on many-device
pods, parameters and optimiser state can also be split over an 'fsdp' mesh axis, e.g.
--config.mesh.fsdp=4.

  python -m cvrl_jax.main --config=configs/cvrl_r3d152x2_k600.py --workdir=gs://YOUR_BUCKET/runs/r152
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
  config.num_train_steps = 71_488
  config.model.depth = 152
  config.model.width_multiplier = 2.0
  config.model.remat = True
  return config
