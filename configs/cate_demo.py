"""CATE on the moving-MNIST demo videos: configs/demo.py (the CVRL demo run) with CATE's head.

  python -m cvrl_jax.data.demo --output demo_data
  python -m cvrl_jax.main --config=configs/cate_demo.py:/path/to/demo_data --workdir=/tmp/cate

The CVRL demo's data, backbone, crop, batch, budget and optimiser; the Transformer head at
width 64 (1 layer, 4 heads, output 64) reads the feature and the five augmentation parameters
(docs/recipes/temporal.md).
"""
import importlib.util
import os

import ml_collections

from cvrl_jax import objectives

DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'demo.py')


def get_config(data_dir: str = 'demo_data') -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location('cvrl_demo_config', DEMO)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(data_dir)
  crop = (config.objective.crop_area_range, config.objective.crop_aspect_range)
  with config.unlocked():
    config.objective = objectives.objective_config(
        'cate', temperature=0.1, head='transformer', head_hidden_dim=64, head_num_layers=1,
        head_num_heads=4, head_output_dim=64, head_bn_momentum=0.997)
  config.objective.crop_area_range, config.objective.crop_aspect_range = crop
  return config
