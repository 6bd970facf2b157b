"""OPN on the moving-MNIST demo videos: minutes on a CPU (the demo data of configs/demo.py).

The demo's backbone, batch, epochs and seed with OPN's task: 4 frames 2-6 frames apart, one
shared box (the whole 32-pixel frame), spatial jitter of up to 2 pixels around a 28-pixel window,
channel splitting, a head of width 64 / 32, and the paper's SGD at LR 0.01.

  python -m cvrl_jax.data.demo --output demo_data
  python -m cvrl_jax.main --config=configs/opn_demo.py:/path/to/demo_data --workdir=/tmp/opn_demo

Each frame reaches the 3D backbone as a static clip of 4 copies (frame_repeat), so every
temporal tap trains and the encoder is usable on clips.
"""
from cvrl_jax import config_lib
from cvrl_jax import objectives


def get_config(data_dir: str = 'demo_data'):
  config = config_lib.demo_base_config(data_dir, num_frames=1, frame_stride=1)

  with config.unlocked():
    config.objective = objectives.objective_config(
        'opn', frame_gap_range=(2, 6), jitter=2, flip_prob=0.5, channel_split=True, frame_repeat=4,
        element_dim=64, pair_dim=32, head_use_bn=True, layer_dropout=0.5)
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
  config.lock()
  return config
