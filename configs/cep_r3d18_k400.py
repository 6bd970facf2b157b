"""CEP (Yang, Mirmehdi, Burghardt, BMVC 2021) on Kinetics-400 at the paper's scale.

  python -m cvrl_jax.main --config=configs/cep_r3d18_k400.py --workdir=/tmp/cep \
      --config.data.train_files='/data/k400/train-*' --config.data.eval_files='/data/k400/val-*'

Recipe (docs/recipes/temporal.md, "CEP"): one 48-frame window at stride 1, 224 x 224, two views
with the 'cep' augmentation (crop 40-100%, colour jitter 0.4/0.4/0.4/0.4 always, grayscale 0.2,
flip); the query cut into past/current/future segments of 16 frames, the key's sparse clip 16 of
its 48 frames; R3D-18; appearance head 512 -> 512 -> 2048 and cycle head 512 -> 512 (LayerNorm)
-> 2048; forward and backward predictors 2048 -> 4096 (BN) -> 2048; momentum encoder 0.99,
queue 16,384, T 0.07; loss A + CL + 0.1 CC. SGD, LR 0.01 x batch / 64, momentum 0.9, weight
decay 1e-4, 50 epochs, cosine to LR / 1000. Where we differ: no warmup and batch 64 (the paper
states neither).
"""
from cvrl_jax import config_lib
from cvrl_jax import objectives


def get_config():
  config = config_lib.base_config()
  config.data.num_frames = 16  # a segment; the plan asks for the 48-frame window itself
  config.data.frame_stride = 1
  config.data.image_size = 224
  config.data.num_classes = 400
  config.data.num_train_examples = 215_570
  config.data.eval_num_frames = 16
  config.data.eval_frame_stride = 1
  config.data.eval_image_size = 224

  config.model.depth = 18

  with config.unlocked():
    config.objective = objectives.objective_config(
        'cep', temperature=0.07, queue_size=16_384, momentum=0.99, segment_frames=16,
        window_stride=1, head_hidden_dim=512, head_output_dim=2048, predictor_hidden_dim=4096,
        predictor_bn_momentum=0.9, appearance_weight=1.0, prediction_weight=1.0,
        cycle_weight=0.1, augment_policy='cep')
  config.batch_size = 64
  config.num_epochs = 50
  config.optim.name = 'sgd'
  config.optim.base_lr = 0.01
  config.optim.base_batch_size = 64
  config.optim.momentum = 0.9
  config.optim.weight_decay = 1e-4
  config.optim.schedule = 'cosine'
  config.optim.final_lr_fraction = 1e-3
  config.optim.warmup_epochs = 0.0
  config.lock()
  return config
