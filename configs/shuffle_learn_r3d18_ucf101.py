"""Shuffle & Learn (Misra et al., ECCV 2016) at its paper's scale: UCF101, our R3D-18 on frames.

  python -m cvrl_jax.main --config=configs/shuffle_learn_r3d18_ucf101.py --workdir=/tmp/snl \
      --config.data.train_files='/data/ucf101/train-*' --config.data.eval_files='/data/ucf101/val-*'

Recipe (docs/recipes/pretext.md, "Shuffle & Learn"): 5 frames a < b < c < d < e; positive
(b, c, d) for 25% of the tuples, else (b, a, d) or (b, e, d); per-frame fc7 4096, the three
concatenated, Linear(2); SGD LR 1e-3, momentum 0.9, weight decay 5e-4, 128 tuples a step,
100k iterations, the LR divided by 10 at 80k. Choices: consecutive sampled frames 15-30 frames apart (frame_gap_range:
|b - d| is 30-60 and min(|a - b|, |d - e|) at least 15, the paper's gaps at ~30 fps
[unconfirmed]), frames sampled uniformly instead of from high-motion windows, one crop box
for the tuple, no flip; R3D-18 on static clips of one frame where the paper used CaffeNet.

Each frame reaches the 3D backbone as a static clip of 8 copies (frame_repeat), so every
temporal tap trains and the encoder is usable on clips.
"""
from cvrl_jax import config_lib
from cvrl_jax import objectives


def get_config():
  config = config_lib.base_config()
  config.data.num_frames = 1
  config.data.frame_stride = 1
  config.data.image_size = 224
  config.data.num_classes = 101
  config.data.eval_num_frames = 16
  config.data.eval_image_size = 112
  config.data.eval_resize = 128
  config.data.eval_crop_size = 112

  config.model.depth = 18

  with config.unlocked():
    config.objective = objectives.objective_config(
        'shuffle_learn', frame_gap_range=(15, 30), positive_fraction=0.25, fusion='concat',
        frame_repeat=8,
        element_dim=4096, head_use_bn=False, layer_dropout=0.0, augment_policy='none')
  config.batch_size = 128
  config.num_epochs = 0
  config.num_train_steps = 100_000
  config.optim.name = 'sgd'
  config.optim.base_lr = 1e-3
  config.optim.base_batch_size = 128
  config.optim.momentum = 0.9
  config.optim.weight_decay = 5e-4
  config.optim.schedule = 'step'
  config.optim.decay_steps = (80_000,)
  config.optim.warmup_epochs = 0.0
  config.lock()
  return config
