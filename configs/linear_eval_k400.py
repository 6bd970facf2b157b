"""Linear evaluation of a CVRL R3D-50 on Kinetics-400 (docs/recipes/cvrl.md "Evaluation").

Frozen encoder (BatchNorm in inference mode), L2-normalised 2048-d feature -> Dense(400); SGD
momentum 0.9, LR 32 at batch 1024, 100 epochs with 5 warmup epochs, cosine, no weight decay.
Training clips: one random 32-frame clip at stride 2 per video, random resized crop (area 0.3-1,
aspect 0.5-2) to 224, flip. Test: 10 temporal x 3 spatial views of 32 frames, short side 256,
256 x 256 crops, softmax averaged. The head has 400 outputs (the reference config's 600 is a bug).
Reported top-1: 63.8 (200-epoch pretraining), 66.1 (800 epochs).

  python -m cvrl_jax.main --config=configs/linear_eval_k400.py \
      --workdir=gs://YOUR_BUCKET/runs/k400_linear \
      --config.init_checkpoint=gs://YOUR_BUCKET/runs/k400
  # faster, no training augmentation (results named linear_cached_features/...):
  ... --config.eval.linear_cached_features=True
"""
import ml_collections

from cvrl_jax import config_lib


def get_config() -> ml_collections.ConfigDict:
  config = config_lib.base_config()
  config.job = 'linear_eval'
  config.init_checkpoint = ''  # the pretraining workdir or an export (empty: random-init baseline)
  config.data.train_files = 'gs://YOUR_BUCKET/kinetics400/train-*.tfrecord'
  config.data.eval_files = 'gs://YOUR_BUCKET/kinetics400/val-*.tfrecord'
  config.data.num_classes = 400
  config.data.num_train_examples = 215_570
  # Clips (base defaults, spelled out): 32 frames at stride 2; 224 train crops; 10 x 3 test views.
  config.data.eval_num_frames = 32
  config.data.eval_frame_stride = 2
  config.data.eval_image_size = 224
  config.data.eval_resize = 256
  config.data.eval_crop_size = 256
  config.data.eval_num_temporal_views = 10
  config.data.eval_num_spatial_views = 3

  config.batch_size = 1024
  config.num_epochs = 100
  config.optim.name = 'sgd'
  config.optim.momentum = 0.9
  config.optim.base_lr = 32.0
  config.optim.base_batch_size = 1024
  config.optim.warmup_epochs = 5.0
  config.optim.schedule = 'cosine'
  config.optim.weight_decay = 0.0
  config.eval.batch_size = 64  # videos per test batch, 30 views each
  config.eval.test_mode = 'test_views'
  return config
