"""Order + transform (Jiao et al., ISBI 2020), as a general video pretext task with our R3D-18.

  python -m cvrl_jax.main --config=configs/order_transform_r3d18_ucf101.py --workdir=/tmp/ot \
      --config.data.train_files='/data/ucf101/train-*' --config.data.eval_files='/data/ucf101/val-*'

Recipe (docs/recipes/pretext.md, "Anatomy-aware order + transform"): one clip, its segments
reshuffled, and one geometric transform applied to every frame; predict both. Only the abstract
is public, so everything else is a documented choice [unconfirmed]: 4 segments of 8 frames
(a 32-frame clip at stride 1), the 12 order classes with reversals merged
(order_classes='all' for 24), transforms = 4 rotations x horizontal flip (8 classes),
loss = CE(order) + 1.0 x CE(transform) (transform_weight), a pairwise head (512, dropout 0.5),
112-pixel random resized crops, no colour (a transform task must not be solvable from colour),
SGD LR 0.01, momentum 0.9, weight decay 5e-4, batch 32, 100 epochs, constant LR. The paper's
data is fetal ultrasound video; ours is whatever data.train_files names.
"""
from cvrl_jax import config_lib
from cvrl_jax import objectives


def get_config():
  config = config_lib.base_config()
  config.data.num_frames = 8
  config.data.frame_stride = 1
  config.data.image_size = 112
  config.data.num_classes = 101
  config.data.eval_num_frames = 16
  config.data.eval_image_size = 112
  config.data.eval_resize = 128
  config.data.eval_crop_size = 112

  config.model.depth = 18

  with config.unlocked():
    config.objective = objectives.objective_config(
        'order_transform', num_segments=4, order_classes='up_to_reversal', transform_weight=1.0,
        fusion='pairwise', pair_dim=512, dropout=0.5, augment_policy='none')
  config.batch_size = 32
  config.num_epochs = 100
  config.optim.name = 'sgd'
  config.optim.base_lr = 0.01
  config.optim.base_batch_size = 32
  config.optim.momentum = 0.9
  config.optim.weight_decay = 5e-4
  config.optim.schedule = 'constant'
  config.optim.warmup_epochs = 0.0
  config.lock()
  return config
