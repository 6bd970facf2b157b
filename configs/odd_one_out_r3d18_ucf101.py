"""Odd-One-Out, O3N (Fernando et al., CVPR 2017) on UCF101 with our R3D-18 on 6-frame elements.

  python -m cvrl_jax.main --config=configs/odd_one_out_r3d18_ucf101.py --workdir=/tmp/o3n \
      --config.data.train_files='/data/ucf101/train-*' --config.data.eval_files='/data/ucf101/val-*'

Recipe (docs/recipes/pretext.md, "O3N"): 6 elements of 6 frames from one video, 5 in order and
one with its frames permuted; predict the odd position (6 classes); sum-of-differences fusion
(or fusion='concat'). There is no official code: the training constants are documented choices
[unconfirmed]: elements one after the other at frame stride 2 (a 66-frame tuple), 112-pixel
random resized crops per element with a flip, SGD LR 0.01, momentum 0.9, weight decay 5e-4,
batch 64, 100 epochs, constant LR; our 3D backbone encodes each element where the paper
used dynamic images.
"""
from cvrl_jax import config_lib
from cvrl_jax import objectives


def get_config():
  config = config_lib.base_config()
  config.data.num_frames = 6
  config.data.frame_stride = 2
  config.data.image_size = 112
  config.data.num_classes = 101
  config.data.eval_num_frames = 16
  config.data.eval_image_size = 112
  config.data.eval_resize = 128
  config.data.eval_crop_size = 112

  config.model.depth = 18

  with config.unlocked():
    config.objective = objectives.objective_config(
        'odd_one_out', num_elements=6, element_gap=0, fusion='sum_of_differences',
        element_dim=0, augment_policy='flip_only')
  config.batch_size = 64
  config.num_epochs = 100
  config.optim.name = 'sgd'
  config.optim.base_lr = 0.01
  config.optim.base_batch_size = 64
  config.optim.momentum = 0.9
  config.optim.weight_decay = 5e-4
  config.optim.schedule = 'constant'
  config.optim.warmup_epochs = 0.0
  config.lock()
  return config
