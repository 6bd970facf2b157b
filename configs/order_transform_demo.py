"""Order + transform on the moving-MNIST demo videos (the data of configs/demo.py): minutes on a
CPU.

The demo's backbone, batch, epochs and seed with the task scaled to 40-frame videos: 4 segments
of 4 frames at stride 2 (a 28-frame clip), 12 order classes and 8 transforms, the whole frame,
a pairwise head of 64, and SGD at LR 0.01.

  python -m cvrl_jax.data.demo --output demo_data
  python -m cvrl_jax.main --config=configs/order_transform_demo.py:/path/to/demo_data \
      --workdir=/tmp/order_transform_demo
"""
import os

from cvrl_jax import config_lib
from cvrl_jax import objectives


def get_config(data_dir: str = 'demo_data'):
  config = config_lib.base_config()
  config.data.train_files = os.path.join(data_dir, 'train-*-of-*.tfrecord')
  config.data.eval_files = os.path.join(data_dir, 'test-*-of-*.tfrecord')
  config.data.num_classes = 10
  config.data.num_frames = 4
  config.data.frame_stride = 2
  config.data.image_size = 32
  config.data.shuffle_buffer = 256
  config.data.eval_num_frames = 8
  config.data.eval_image_size = 32
  config.data.eval_resize = 32
  config.data.eval_crop_size = 32

  config.model.depth = 18
  config.model.width_multiplier = 0.25
  config.model.dtype = 'float32'  # CPUs have no fast bfloat16 convolutions

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
