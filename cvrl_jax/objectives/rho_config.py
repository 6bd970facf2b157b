"""Config defaults of the rho-family (docs/recipes/rho_family.md), used by configs/rho_*.py.

- `set_method(config, method)` puts one method's objective and optimiser (the recipe's table) into
  any config, leaving data, model and budget alone; the comparison command applies it to the
  demo config so every method runs on the same data, backbone, batch and steps.
- `rho_config(method)` is the paper-scale recipe on Slow-R50 8x8: the same R3D-50 blocks as
  CVRL's backbone with a (1, 7, 7) stem without temporal stride, 8 input frames at stride 8,
  global batch 512, 200 epochs with 35 warmup epochs and a cosine schedule.
- `demo_config(method, data_dir)` is configs/demo.py (CVRL's demo run) with the method swapped in
  and the method's sizes scaled to the demo.
"""

import ml_collections

from cvrl_jax import config_lib
from cvrl_jax import objectives

METHODS = ('rho_moco', 'rho_byol', 'rho_simclr', 'rho_swav')

# The recipe's table. head_num_layers counts hidden layers, as CVRL's key does: the reference's
# "3 layers, hidden 2048, out 128" is two hidden layers plus the output layer.
_OBJECTIVES = {
    'rho_moco': dict(rho=4, temperature=0.1, head_hidden_dim=2048, head_num_layers=2,
                     head_output_dim=128, head_use_bn=False, base_momentum=0.994,
                     queue_size=65_536, queue_sharding='batch'),
    'rho_byol': dict(rho=2, temperature=0.5, head_hidden_dim=4096, head_num_layers=1,
                     head_output_dim=256, head_use_bn=True, base_momentum=0.996,
                     predictor_hidden_dim=4096, predictor_num_layers=1),
    'rho_simclr': dict(rho=4, temperature=0.1, head_hidden_dim=2048, head_num_layers=2,
                       head_output_dim=128, head_use_bn=True, pairing='adjacent'),
    'rho_swav': dict(rho=2, temperature=0.1, head_hidden_dim=2048, head_num_layers=2,
                     head_output_dim=128, head_use_bn=True, pairing='adjacent',
                     num_prototypes=1000, sinkhorn_epsilon=0.05, sinkhorn_iters=3,
                     freeze_prototypes_epochs=1.0),
}
# SGD for MoCo; SGD + LARS (trust coefficient 0.001) for the others. Learning rates are the
# paper's at global batch 512.
_OPTIMIZERS = {
    'rho_moco': dict(name='sgd', base_lr=0.4, weight_decay=1e-4),
    'rho_byol': dict(name='lars', base_lr=4.8, weight_decay=1e-6),
    'rho_simclr': dict(name='lars', base_lr=4.8, weight_decay=1e-6),
    'rho_swav': dict(name='lars', base_lr=4.8, weight_decay=1e-6),
}
PAPER_BATCH_SIZE = 512


def set_method(config: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
  """Replaces config.objective with `method`'s and sets its optimiser; returns config (locked)."""
  if method not in METHODS:
    raise ValueError(f'unknown rho-family method {method!r}; choose one of {METHODS}')
  with config.unlocked():
    objective = ml_collections.ConfigDict(dict(name=method, **_OBJECTIVES[method]))
    # PyTorch's BatchNorm1d default (its momentum 0.1 is 0.9 in Flax's convention).
    objective.head_bn_momentum = 0.9
    base_objective = config_lib.base_config().objective
    for key in objectives.PLAN_OVERRIDE_KEYS:  # their defaults (empty: the method's own)
      objective[key] = base_objective[key]
    config.objective = objective
  config.optim.update(_OPTIMIZERS[method])
  config.optim.momentum = 0.9
  config.optim.nesterov = False
  config.optim.base_batch_size = PAPER_BATCH_SIZE
  config.optim.lars_trust_coefficient = 0.001
  config.lock()  # the new objective keys too: a misspelt override fails
  return config


def rho_config(method: str) -> ml_collections.ConfigDict:
  """The reference recipe of `method` at paper scale; the caller sets the data files."""
  config = set_method(config_lib.base_config(), method)
  config.model.depth = 50
  config.model.stem_temporal_kernel = 1  # Slow-R50: (1, 7, 7) stem, no temporal stride
  config.model.stem_temporal_stride = 1
  config.data.num_frames = 8
  config.data.frame_stride = 8  # the reference samples 30 fps video: 8 x 8 frames ~ 2.1 s
  config.data.eval_num_frames = 8
  config.data.eval_frame_stride = 8
  config.batch_size = PAPER_BATCH_SIZE
  config.num_epochs = 200
  config.optim.warmup_epochs = 35.0
  config.optim.schedule = 'cosine'
  return config


def load_demo_config(data_dir: str = 'demo_data') -> ml_collections.ConfigDict:
  """configs/demo.py's get_config(data_dir): the CVRL demo run."""
  return config_lib.load_config_file('demo', data_dir)


def demo_config(method: str, data_dir: str = 'demo_data', rho: int = 2
                ) -> ml_collections.ConfigDict:
  """The CVRL demo run (same data, backbone, batch, epochs, seed) with `method` and rho clips.

  The heads take the demo's CVRL sizes (hidden 256, output 64) and its random-crop ranges (which
  configs/demo.py explains); the queue and the prototypes shrink with the 2,000-video dataset and
  batch 32; the learning rate is the paper's at the demo batch (as the CVRL demo does for its
  short run).
  """
  config = load_demo_config(data_dir)
  demo_objective = config.objective
  set_method(config, method)
  objective = config.objective
  head_hidden, head_output = demo_objective.head_hidden_dim, demo_objective.head_output_dim
  objective.crop_area_range = demo_objective.crop_area_range
  objective.crop_aspect_range = demo_objective.crop_aspect_range
  objective.rho = rho
  objective.head_hidden_dim = head_hidden
  objective.head_output_dim = head_output
  if method == 'rho_byol':
    objective.predictor_hidden_dim = head_hidden
  if method == 'rho_moco':
    objective.queue_size = 1024  # 16 steps of keys at rho = 2, a quarter of an epoch
  if method == 'rho_swav':
    objective.num_prototypes = 100  # 10 per digit class; more than the 64 output dimensions
  config.optim.base_batch_size = config.batch_size
  return config
