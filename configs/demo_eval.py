"""Linear probe and kNN of `init_checkpoint` on the moving-MNIST demo videos (the demo's eval).

Same data and backbone as configs/demo.py; init_checkpoint is the pretraining workdir (or an
export of it); left empty, the same architecture at random initialisation is evaluated.

  python -m cvrl_jax.main --config=configs/demo_eval.py --workdir=/tmp/cvrl_demo_linear \
      --config.init_checkpoint=/tmp/cvrl_demo
  python -m cvrl_jax.main --config=configs/demo_eval.py --workdir=/tmp/cvrl_demo_knn \
      --config.init_checkpoint=/tmp/cvrl_demo --config.job=knn_eval
  python -m cvrl_jax.main --config=configs/demo_eval.py:/path/to/demo_data ...

The linear probe uses the recipe's optimiser (frozen encoder in inference mode, L2-normalised
features, Dense(10), SGD momentum 0.9, LR 32 at batch 1024 scaled linearly, warmup then cosine, no
weight decay, 100 epochs) on cached centre-clip features: on two CPU cores a backbone pass per
training step would take most of the demo's time. Its results are named
linear_cached_features/...; --config.eval.linear_cached_features=False runs the full recipe
(random-crop-and-flip clips every step). The classifier trains on standardised features
(eval.linear_standardize): the same Dense(10) on L2-normalised features, better conditioned for
SGD. With plain SGD its 1,562 steps under-fit the pretrained features (train top-1 about 60%,
test below the random encoder's), which standardisation lifted by 10-19 points over three seeds
while the random encoder's barely moved (BENCHMARKS.md, "Demo"). The demo frames are square,
so the three spatial test crops would be identical: testing averages the softmax over 5 temporal
views only. kNN uses the centre clip of every video.
"""
import importlib.util
import os

import ml_collections


def _pretraining_config(data_dir: str) -> ml_collections.ConfigDict:
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'demo.py')
  spec = importlib.util.spec_from_file_location('cvrl_demo_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(data_dir)


def get_config(data_dir: str = 'demo_data') -> ml_collections.ConfigDict:
  config = _pretraining_config(data_dir)  # the demo's data and backbone
  config.job = 'linear_eval'
  config.init_checkpoint = ''

  # Clips: as in pretraining (8 frames at stride 2, 32 x 32); 5 temporal test views.
  config.data.eval_num_frames = config.data.num_frames
  config.data.eval_frame_stride = config.data.frame_stride
  config.data.eval_image_size = config.data.image_size
  config.data.eval_resize = config.data.image_size
  config.data.eval_crop_size = config.data.image_size
  config.data.eval_num_temporal_views = 5
  config.data.eval_num_spatial_views = 1

  # Linear probe: the recipe's optimiser and epochs, on cached features.
  config.eval.linear_cached_features = True
  config.eval.linear_standardize = True
  config.batch_size = 128
  config.num_epochs = 100
  config.num_train_steps = 0
  config.optim.name = 'sgd'
  config.optim.momentum = 0.9
  config.optim.base_lr = 32.0
  config.optim.base_batch_size = 1024
  config.optim.warmup_epochs = 5.0
  config.optim.schedule = 'cosine'
  config.optim.weight_decay = 0.0

  config.eval.batch_size = 64
  config.eval.test_mode = 'test_views'
  config.eval.knn_mode = 'center_clip'
  config.log_every_steps = 20
  return config
