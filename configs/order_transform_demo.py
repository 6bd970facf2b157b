"""Order + transform on the moving-MNIST demo videos (the data of configs/demo.py): minutes on a
CPU.

The demo's backbone, batch, epochs and seed with the task scaled to 40-frame videos: 4 segments
of 4 frames at stride 2 (a 28-frame clip), 12 order classes and 8 transforms, the whole frame,
a pairwise head of 64, and SGD at LR 0.01.

  python -m cvrl_jax.data.demo --output demo_data
  python -m cvrl_jax.main --config=configs/order_transform_demo.py:/path/to/demo_data \
      --workdir=/tmp/order_transform_demo
"""
from cvrl_jax import config_lib
from cvrl_jax import objectives


def get_config(data_dir: str = 'demo_data'):
  config = config_lib.demo_base_config(data_dir, num_frames=4, frame_stride=2)

  with config.unlocked():
    config.objective = objectives.objective_config(
        'order_transform', num_segments=4, order_classes='up_to_reversal', transform_weight=1.0,
        fusion='pairwise', pair_dim=64, dropout=0.5, augment_policy='none')
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
