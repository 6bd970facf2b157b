"""rho-SwAV on the moving-MNIST demo videos: configs/demo.py (the CVRL demo run) with rho-SwAV.

Same data, backbone (R3D-18 at a quarter width, 8 frames of 32 x 32), batch 32, epochs and seed as
the CVRL demo, rho = 2 clips per video, the method's recipe with its sizes scaled to the demo
(cvrl_jax/objectives/rho_config.py, demo_config).

  python -m cvrl_jax.data.demo --output demo_data
  python -m cvrl_jax.main --config=configs/rho_swav_demo.py --workdir=/tmp/rho_swav_demo
  python -m cvrl_jax.main --config=configs/rho_swav_demo.py:/path/to/demo_data --workdir=...
"""
import ml_collections

from cvrl_jax.objectives import rho_config


def get_config(data_dir: str = 'demo_data') -> ml_collections.ConfigDict:
  return rho_config.demo_config('rho_swav', data_dir)
