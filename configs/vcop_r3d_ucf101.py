"""VCOP (Xu et al., CVPR 2019) as its paper trains it: the paper's R3D on UCF101 split 1.

  python -m cvrl_jax.main --config=configs/vcop_r3d_ucf101.py --workdir=/tmp/vcop \
      --config.data.train_files='/data/ucf101/train-*' --config.data.eval_files='/data/ucf101/val-*'

Recipe (docs/recipes/pretext.md, "VCOP"): 3 clips of 16 consecutive frames, 8 frames apart (a
64-frame tuple; shorter videos are left out and counted), a random 112 x 112 crop per clip of
frames resized to 128 x 171 (here: a random square box of 57% of the stored frame, resized to
112), no flip, no colour; 6 order classes; pairwise head (Linear 2C -> 512 + ReLU shared by the
3 pairs, concatenated, dropout 0.5, Linear 6). The paper's R3D: a (3, 7, 7) stem of stride
(1, 2, 2) without max-pool, one basic block per stage (64/128/256/512), stages 3-5 stride 2 in
time and space. SGD, LR 1e-3 constant, momentum 0.9, weight decay 5e-4, batch 8 tuples,
300 epochs. The paper holds 800 UCF101 training videos out for validation: point
data.eval_files at them for the online pretext-accuracy monitor.
"""
from cvrl_jax import config_lib
from cvrl_jax import objectives


def get_config():
  config = config_lib.base_config()
  config.data.num_frames = 16
  config.data.frame_stride = 1
  config.data.image_size = 112
  config.data.num_classes = 101
  config.data.eval_num_frames = 16
  config.data.eval_frame_stride = 1
  config.data.eval_image_size = 112
  config.data.eval_resize = 128
  config.data.eval_crop_size = 112

  config.model.depth = 10  # one basic block per stage
  config.model.stem_temporal_kernel = 3
  config.model.stem_temporal_stride = 1
  config.model.stem_max_pool = False
  config.model.temporal_downsample = True
  config.model.dtype = 'float32'

  with config.unlocked():
    config.objective = objectives.objective_config(
        'vcop', num_clips=3, clip_gap=8, fusion='pairwise', pair_dim=512, dropout=0.5,
        head_use_bn=False, element_dim=0, augment_policy='none')
  config.batch_size = 8
  config.num_epochs = 300
  config.optim.name = 'sgd'
  config.optim.base_lr = 1e-3
  config.optim.base_batch_size = 8
  config.optim.momentum = 0.9
  config.optim.weight_decay = 5e-4
  config.optim.schedule = 'constant'
  config.optim.warmup_epochs = 0.0
  config.pretext_every_steps = 1000  # held-out pretext accuracy (data.eval_files)
  # VCOP's evaluation: 10 centre-cropped clips per video; retrieval on conv5 max-pooled (1, 2, 2)
  # features averaged over the clips; fine-tuning averages the clips' logits.
  config.data.eval_num_temporal_views = 10
  config.data.eval_num_spatial_views = 1
  config.eval.knn_mode = 'test_views'
  config.eval.knn_feature = 'conv5_maxpool'
  config.eval.view_average = 'logits'
  config.lock()
  return config
