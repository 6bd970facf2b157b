"""CVRL, R3D-50, Kinetics-400, 200 epochs (docs/recipes/cvrl.md, "Pretraining recipe").

Batch 1024 videos (2048 clips), SGD momentum 0.9, LR 0.32 at batch 1024 with 5 warmup epochs then
cosine, weight decay 1e-6 on kernels, bfloat16 compute, BN momentum 0.9 / eps 1e-5:
215,570 training videos x 200 epochs / 1024 = 42,103 steps.

  python -m cvrl_jax.main --config=configs/cvrl_r3d50_k400.py --workdir=gs://YOUR_BUCKET/runs/k400
"""
import ml_collections

from cvrl_jax import config_lib


def get_config() -> ml_collections.ConfigDict:
  config = config_lib.base_config()
  # Kinetics-400 as DMVR TFRecords (`python -m cvrl_jax.convert`). Replace YOUR_BUCKET with your
  # bucket or a local folder; comma-separated globs are accepted.
  config.data.train_files = 'gs://YOUR_BUCKET/kinetics400/train-*.tfrecord'
  config.data.eval_files = 'gs://YOUR_BUCKET/kinetics400/val-*.tfrecord'
  config.data.num_classes = 400  # the reference config says 600 for K400 linear eval: a bug
  config.data.num_train_examples = 215_570
  config.num_epochs = 200  # 800 epochs gives the paper's best K400 numbers (66.1% linear)
  return config
