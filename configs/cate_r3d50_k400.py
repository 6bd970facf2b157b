"""CATE (Sun et al., ICCV 2021), R3D-50, Kinetics-400, 200 epochs (docs/recipes/temporal.md).

CVRL's recipe (configs/cvrl_r3d50_k400.py: batch 1024, 16 frames at stride 2, 224², SGD LR 0.32,
5 warmup epochs then cosine, T 0.1, CVRL's views and pair sampler), since the paper's training
constants are not published, with CATE's head: the backbone feature and the five augmentation
parameters (time shift, crop-centre shift y/x, crop log-scale h/w) read by a Transformer of
2 layers, width 512, 8 heads, output 128 (our choice of sizes); head='mlp' is the alternative.

  python -m cvrl_jax.main --config=configs/cate_r3d50_k400.py --workdir=gs://YOUR_BUCKET/runs/cate
"""
import ml_collections

from cvrl_jax import config_lib
from cvrl_jax import objectives


def get_config() -> ml_collections.ConfigDict:
  config = config_lib.base_config()
  config.data.train_files = 'gs://YOUR_BUCKET/kinetics400/train-*.tfrecord'
  config.data.eval_files = 'gs://YOUR_BUCKET/kinetics400/val-*.tfrecord'
  config.data.num_classes = 400
  config.data.num_train_examples = 215_570
  config.num_epochs = 200
  with config.unlocked():
    config.objective = objectives.objective_config(
        'cate', temperature=0.1, head='transformer', head_hidden_dim=512, head_num_layers=2,
        head_num_heads=8, head_output_dim=128, head_bn_momentum=0.997)
  return config
