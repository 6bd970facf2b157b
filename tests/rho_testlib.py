"""The rho-family's recipe tables, read from their paper configs (configs/rho_*_slow_r50_k400.py),
put into other configs for tests."""
import ml_collections

from cvrl_jax import compare
from cvrl_jax import config_lib

METHODS = compare.RHO_METHODS
# The optimiser keys a recipe sets; the schedule and budget stay the test's.
OPTIM_KEYS = ('name', 'base_lr', 'weight_decay', 'momentum', 'nesterov', 'base_batch_size',
              'lars_trust_coefficient')


def paper_config(method: str) -> ml_collections.ConfigDict:
  return config_lib.load_config_file(f'{method}_slow_r50_k400')


def demo_config(method: str, data_dir: str) -> ml_collections.ConfigDict:
  return config_lib.load_config_file(f'{method}_demo', data_dir)


def with_method(config: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
  """`config` with `method`'s objective and optimiser from its paper config (locked)."""
  paper = paper_config(method)
  with config.unlocked():
    config.objective = paper.objective
  for key in OPTIM_KEYS:
    config.optim[key] = paper.optim[key]
  config.lock()
  return config
