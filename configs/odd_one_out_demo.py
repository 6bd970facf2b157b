"""Odd-One-Out on the moving-MNIST demo videos: minutes on a CPU (the demo data of configs/demo.py).

The demo's backbone, batch, epochs and seed with the task scaled to 40-frame videos: 6 elements
of 4 consecutive frames, 2 frames apart (a 34-frame tuple), the whole frame, sum-of-differences
fusion, and SGD at LR 0.01.

  python -m cvrl_jax.data.demo --output demo_data
  python -m cvrl_jax.main --config=configs/odd_one_out_demo.py:/path/to/demo_data \
      --workdir=/tmp/odd_one_out_demo
"""
from cvrl_jax import config_lib
from cvrl_jax import objectives


def get_config(data_dir: str = 'demo_data'):
  config = config_lib.demo_base_config(data_dir, num_frames=4, frame_stride=1)

  with config.unlocked():
    config.objective = objectives.objective_config(
        'odd_one_out', num_elements=6, element_gap=2, fusion='sum_of_differences',
        element_dim=0, augment_policy='none')
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
