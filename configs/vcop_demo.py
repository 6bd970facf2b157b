"""VCOP on the moving-MNIST demo videos: minutes on a CPU (the demo data of configs/demo.py).

  python -m cvrl_jax.data.demo --output demo_data
  python -m cvrl_jax.main --config=configs/vcop_demo.py:/path/to/demo_data --workdir=/tmp/vcop

The demo's backbone, frame size, batch, epochs and seed, with VCOP's task scaled to its 40-frame
videos: 3 clips of 8 consecutive frames, 4 frames apart (a 32-frame tuple), the whole frame (no
crop: the digit fills it), a pairwise head of width 64, and the paper's SGD (momentum 0.9,
weight decay 5e-4, constant LR) at LR 0.01.
"""
from cvrl_jax import config_lib
from cvrl_jax import objectives


def get_config(data_dir: str = 'demo_data'):
  config = config_lib.demo_base_config(data_dir, num_frames=8, frame_stride=1)

  with config.unlocked():
    config.objective = objectives.objective_config(
        'vcop', num_clips=3, clip_gap=4, fusion='pairwise', pair_dim=64, dropout=0.5,
        head_use_bn=False, element_dim=0, augment_policy='none')
  config.objective.crop_area_range = (1.0, 1.0)
  config.objective.crop_aspect_range = (1.0, 1.0)

  config.batch_size = 32
  config.num_epochs = 20
  config.optim.name = 'sgd'
  config.optim.base_lr = 0.01
  config.optim.base_batch_size = 32
  config.optim.weight_decay = 5e-4
  config.optim.schedule = 'constant'
  config.optim.warmup_epochs = 0.0
  config.checkpoint.every_steps = 100
  config.log_every_steps = 10
  config.pretext_every_steps = 250  # held-out pretext accuracy on 256 test videos
  config.eval.monitor_max_examples = 256
  config.lock()
  return config
