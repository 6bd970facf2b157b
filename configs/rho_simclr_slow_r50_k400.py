"""rho-SimCLR, Slow-R50 8x8, Kinetics-400, 200 epochs (docs/recipes/rho_family.md).

Global batch 512 videos, 8 frames at stride 8, aug+ augmentation, 35 warmup epochs then cosine;
SGD + LARS (trust 0.001), LR 4.8 at batch 512, weight decay 1e-6; projector 2048-2048-128 with
synced BN; NT-Xent with T 0.1 over adjacent clip pairs (objective.pairing='all' for every pair);
rho 4.
215,570 training videos x 200 epochs / 512 = 84,207 steps.

  python -m cvrl_jax.main --config=configs/rho_simclr_slow_r50_k400.py \
      --workdir=gs://YOUR_BUCKET/runs/rho_simclr
  (rho = 2 clips per video: add --config.objective.rho=2)
"""
import ml_collections

from cvrl_jax.objectives import rho_config


def get_config() -> ml_collections.ConfigDict:
  config = rho_config.rho_config('rho_simclr')
  # Kinetics-400 as DMVR TFRecords (`python -m cvrl_jax.convert`). Replace YOUR_BUCKET with your
  # bucket or a local folder; comma-separated globs are accepted.
  config.data.train_files = 'gs://YOUR_BUCKET/kinetics400/train-*.tfrecord'
  config.data.eval_files = 'gs://YOUR_BUCKET/kinetics400/val-*.tfrecord'
  config.data.num_classes = 400
  config.data.num_train_examples = 215_570
  return config
