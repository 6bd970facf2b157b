"""VTDL (Wang et al., arXiv 2008.02129) on UCF101 split 1 at the paper's scale.

  python -m cvrl_jax.main --config=configs/vtdl_r3d18_ucf101.py --workdir=/tmp/vtdl \
      --config.data.train_files='/data/ucf101/train-*' --config.data.eval_files='/data/ucf101/val-*'

Recipe (docs/recipes/temporal.md, "VTDL"): 3 clips of 16 frames at stride 4, 224 x 224; anchor
and positive from one start, a temporal negative from another start of the same video (moved by
a third of the video when within 2 frames of the anchor's); the 'vtdl' augmentation per view and
TCA (lambda ~ U(0, 0.1)) on the anchor; pooled feature -> Linear 128; EMA key encoder 0.999;
queue 5,000; InfoNCE at T 0.07. SGD, LR 0.003, momentum 0.9, weight decay 1e-4, 240 epochs,
the LR divided by 10 at epochs 120, 160 and 200.
Where we differ: R3D-18 (the paper's best numbers are I3D), batch 64 (not stated), a flip in
place of the +-10 degree rotation.
"""
from cvrl_jax import config_lib
from cvrl_jax import objectives


def get_config():
  config = config_lib.base_config()
  config.data.num_frames = 16
  config.data.frame_stride = 4
  config.data.image_size = 224
  config.data.num_classes = 101
  config.data.num_train_examples = 9_537
  config.data.eval_num_frames = 16
  config.data.eval_frame_stride = 4
  config.data.eval_image_size = 224

  config.model.depth = 18

  with config.unlocked():
    config.objective = objectives.objective_config(
        'vtdl', temperature=0.07, queue_size=5_000, momentum=0.999, head_output_dim=128,
        tca_max_lambda=0.1, min_distance=2, augment_policy='vtdl')
  config.batch_size = 64
  config.num_epochs = 240
  config.optim.name = 'sgd'
  config.optim.base_lr = 0.003
  config.optim.base_batch_size = 64
  config.optim.momentum = 0.9
  config.optim.weight_decay = 1e-4
  config.optim.schedule = 'step'
  config.optim.decay_epochs = (120, 160, 200)
  config.optim.warmup_epochs = 0.0
  config.lock()
  return config
