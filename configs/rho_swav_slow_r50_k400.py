"""rho-SwAV, Slow-R50 8x8, Kinetics-400, 200 epochs (docs/recipes/rho_family.md).

Global batch 512 videos, 8 frames at stride 8, aug+ augmentation, 35 warmup epochs then cosine;
SGD + LARS (trust 0.001), LR 4.8 at batch 512, weight decay 1e-6; projector 2048-2048-128 with BN;
1000 prototypes frozen for the first epoch; Sinkhorn-Knopp eps 0.05, 3 iterations over the global
batch; swapped prediction with T 0.1 over adjacent clip pairs; rho 2.
215,570 training videos x 200 epochs / 512 = 84,207 steps.

  python -m cvrl_jax.main --config=configs/rho_swav_slow_r50_k400.py \
      --workdir=gs://YOUR_BUCKET/runs/rho_swav
  (rho = 4 clips per video: add --config.objective.rho=4)
"""
import ml_collections

from cvrl_jax import config_lib
from cvrl_jax import objectives


def get_config() -> ml_collections.ConfigDict:
  config = config_lib.base_config()
  # Slow-R50 8x8: CVRL's R3D-50 blocks with a (1, 7, 7) stem and no temporal stride; 8 frames at
  # stride 8 of 30 fps video (about 2.1 s).
  config.model.depth = 50
  config.model.stem_temporal_kernel = 1
  config.model.stem_temporal_stride = 1
  config.data.num_frames = 8
  config.data.frame_stride = 8
  config.data.eval_num_frames = 8
  config.data.eval_frame_stride = 8
  # Kinetics-400 as DMVR TFRecords (`python -m cvrl_jax.convert`). Replace YOUR_BUCKET with your
  # bucket or a local folder; comma-separated globs are accepted.
  config.data.train_files = 'gs://YOUR_BUCKET/kinetics400/train-*.tfrecord'
  config.data.eval_files = 'gs://YOUR_BUCKET/kinetics400/val-*.tfrecord'
  config.data.num_classes = 400
  config.data.num_train_examples = 215_570

  # The recipe's table (docs/recipes/rho_family.md). head_num_layers counts hidden layers, as
  # CVRL's key does: "3 layers, hidden 2048, out 128" is two hidden layers and the output layer;
  # head_bn_momentum 0.9 is PyTorch's BatchNorm1d default (its 0.1) in Flax's convention.
  with config.unlocked():
    config.objective = objectives.objective_config(
        'rho_swav', rho=2, temperature=0.1, head_hidden_dim=2048, head_num_layers=2,
        head_output_dim=128, head_use_bn=True, head_bn_momentum=0.9, pairing='adjacent',
        num_prototypes=1000, sinkhorn_epsilon=0.05, sinkhorn_iters=3, freeze_prototypes_epochs=1.0)
  config.batch_size = 512
  config.num_epochs = 200
  config.optim.name = 'lars'
  config.optim.base_lr = 4.8  # at global batch 512
  config.optim.base_batch_size = 512
  config.optim.weight_decay = 1e-6
  config.optim.momentum = 0.9
  config.optim.nesterov = False
  config.optim.lars_trust_coefficient = 0.001
  config.optim.warmup_epochs = 35.0
  config.optim.schedule = 'cosine'
  config.lock()  # the objective's keys too: a misspelt override fails
  return config
