"""CEP on the moving-MNIST demo videos: configs/demo.py's data, backbone, batch, epochs and seed.

  python -m cvrl_jax.data.demo --output demo_data
  python -m cvrl_jax.main --config=configs/cep_demo.py:/path/to/demo_data --workdir=/tmp/cep

CEP's recipe (docs/recipes/temporal.md) scaled to the demo: the demo videos have 40 frames, too
few for the paper's 48-frame window, so the window is 3 segments of 8 frames (24 frames at
stride 1) and the sparse key 8 of those 24; 32 x 32 with the demo's crop (60-100% of the frame,
aspect 3:4-4:3: the paper's 40% crops would cut the digit); heads of width 128 (the backbone's
feature width at a quarter of R3D-18) with 128-d embeddings, predictors 128 -> 256 -> 128, a
queue of 1,024 keys; the paper's T 0.07, momentum 0.99 and loss weights 1 / 1 / 0.1; its SGD and
cosine to LR / 1000, at LR 0.03 for batch 32 (the paper's 0.01 x 32 / 64 was not tried; not
tuned).
"""
from cvrl_jax import config_lib
from cvrl_jax import objectives


def get_config(data_dir: str = 'demo_data'):
  config = config_lib.demo_base_config(data_dir, num_frames=8, frame_stride=1)

  with config.unlocked():
    config.objective = objectives.objective_config(
        'cep', temperature=0.07, queue_size=1_024, momentum=0.99, segment_frames=8,
        window_stride=1, head_hidden_dim=128, head_output_dim=128, predictor_hidden_dim=256,
        predictor_bn_momentum=0.9, appearance_weight=1.0, prediction_weight=1.0,
        cycle_weight=0.1, augment_policy='cep')
  config.objective.crop_area_range = (0.6, 1.0)
  config.objective.crop_aspect_range = (0.75, 1.333)

  config.batch_size = 32
  config.num_epochs = 20
  config.optim.name = 'sgd'
  config.optim.base_lr = 0.03
  config.optim.base_batch_size = 32
  config.optim.momentum = 0.9
  config.optim.weight_decay = 1e-4
  config.optim.schedule = 'cosine'
  config.optim.final_lr_fraction = 1e-3
  config.optim.warmup_epochs = 0.0
  config.checkpoint.every_steps = 100
  config.log_every_steps = 10
  config.lock()
  return config
