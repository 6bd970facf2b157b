"""rho-SimCLR on the moving-MNIST demo videos: configs/demo.py (the CVRL demo run) with rho-SimCLR.

Same data, backbone (R3D-18 at a quarter width, 8 frames of 32 x 32), batch 32, epochs and seed as
the CVRL demo, rho = 2 clips per video, the method's recipe with its sizes scaled to the demo
(configs/rho_simclr_slow_r50_k400.py): the heads take the demo's CVRL sizes (hidden 256, output 64)
and its random-crop ranges (configs/demo.py explains them); the learning rate is the paper's at
the demo batch, as the CVRL demo does for its short run.

  python -m cvrl_jax.data.demo --output demo_data
  python -m cvrl_jax.main --config=configs/rho_simclr_demo.py --workdir=/tmp/rho_simclr_demo
  python -m cvrl_jax.main --config=configs/rho_simclr_demo.py:/path/to/demo_data --workdir=...
"""
import ml_collections

from cvrl_jax import config_lib
from cvrl_jax import objectives


def get_config(data_dir: str = 'demo_data') -> ml_collections.ConfigDict:
  config = config_lib.demo_base_config(data_dir, num_frames=8, frame_stride=2)

  with config.unlocked():
    config.objective = objectives.objective_config(
        'rho_simclr', rho=2, temperature=0.1, head_hidden_dim=256, head_num_layers=2,
        head_output_dim=64, head_use_bn=True, head_bn_momentum=0.9, pairing='adjacent')
  config.objective.crop_area_range = (0.6, 1.0)
  config.objective.crop_aspect_range = (0.75, 1.333)

  # The CVRL demo's budget (configs/demo.py) with the method's optimiser.
  config.batch_size = 32
  config.num_epochs = 20
  config.optim.name = 'lars'
  config.optim.base_lr = 4.8
  config.optim.base_batch_size = 32
  config.optim.weight_decay = 1e-6
  config.optim.momentum = 0.9
  config.optim.nesterov = False
  config.optim.lars_trust_coefficient = 0.001
  config.optim.warmup_epochs = 1.0

  config.checkpoint.every_steps = 100
  config.log_every_steps = 10
  config.knn_every_steps = 250
  config.eval.monitor_max_examples = 1000
  config.lock()
  return config
