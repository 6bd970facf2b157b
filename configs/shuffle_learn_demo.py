"""Shuffle & Learn on the moving-MNIST demo videos (the data of configs/demo.py): minutes on a
CPU.

The demo's backbone, batch, epochs and seed with the task scaled to 40-frame videos: 5 frames
3-8 frames apart (a tuple of 13-33 frames), the whole frame, 25% positives, a per-frame layer of
64, and the paper's SGD at LR 0.01.

  python -m cvrl_jax.data.demo --output demo_data
  python -m cvrl_jax.main --config=configs/shuffle_learn_demo.py:/path/to/demo_data \
      --workdir=/tmp/shuffle_learn_demo

Each frame reaches the 3D backbone as a static clip of 4 copies (frame_repeat), so every
temporal tap trains and the encoder is usable on clips.
"""
from cvrl_jax import config_lib
from cvrl_jax import objectives


def get_config(data_dir: str = 'demo_data'):
  config = config_lib.demo_base_config(data_dir, num_frames=1, frame_stride=1)

  with config.unlocked():
    config.objective = objectives.objective_config(
        'shuffle_learn', frame_gap_range=(3, 8), positive_fraction=0.25, fusion='concat',
        frame_repeat=4,
        element_dim=64, head_use_bn=False, layer_dropout=0.0, augment_policy='none')
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
