"""Fine-tuning a pretrained R3D-50 on HMDB51 (split 1): configs/finetune_ucf101.py's recipe.

  python -m cvrl_jax.main --config=configs/finetune_hmdb51.py \
      --workdir=gs://YOUR_BUCKET/runs/hmdb51_ft \
      --config.init_checkpoint=gs://YOUR_BUCKET/runs/k400
"""
import importlib.util
import os

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'finetune_ucf101.py')
  spec = importlib.util.spec_from_file_location('finetune_ucf101_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.finetune_config('hmdb51')
