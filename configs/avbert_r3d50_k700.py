"""AVBERT (Lee et al., ICLR 2021) on Kinetics-700 at the paper's scale.

  python -m cvrl_jax.convert ... --audio --audio-rate 44100   # records with their sound
  python -m cvrl_jax.main --config=configs/avbert_r3d50_k700.py --workdir=/tmp/avbert \
      --config.data.train_files='/data/k700/train-*' --config.data.eval_files='/data/k700/val-*'

From the paper (docs/recipes/avbert.md): 10 clips over up to 30 s (max_span 900 frames at the
records' 30 fps); the visual R3D-50 with a (5, 7, 7) stride-2 stem; 44.1 kHz audio as 80 mel bins x
128 frames (FFT 2048, hop 512: 65,024 samples per clip), SpecAugment at 0.05; the half-width
separable audio ResNet-50; the shared Transformer with hidden 768, 12 heads, FFN 3072, 6
applications of one layer, rank 128, dropout 0.1. Our choices where the public code has no
pretraining: clips of 32 frames at stride 2 and 112 x 112; 2 of 10 clips masked per modality
(BERT's 15%, rounded); 512 negatives among the batch's 1,280 clips, drawn at sampling temperature
0.1; InfoNCE temperature 0.1; targets keep their gradient; all four loss weights 1; batch 128,
SGD with momentum (the project's optimisers are SGD and LARS), LR 0.1 x batch / 256, 5 warmup
epochs, cosine, 100 epochs.
"""
from cvrl_jax import config_lib
from cvrl_jax import objectives


def get_config():
  config = config_lib.base_config()
  config.data.num_frames = 32
  config.data.frame_stride = 2
  config.data.image_size = 112
  config.data.num_classes = 700
  config.data.num_train_examples = 545_317
  config.data.eval_num_frames = 32
  config.data.eval_frame_stride = 2
  config.data.eval_image_size = 112

  config.model.depth = 50
  config.model.stem_temporal_kernel = 5
  config.model.stem_temporal_stride = 2

  with config.unlocked():
    config.objective = objectives.objective_config(
        'avbert', num_clips=10, clip_frames=32, clip_stride=2, max_span=900,
        augment_policy='flip_only', sample_rate=44_100, audio_samples=65_024, n_fft=2048,
        hop_length=512, n_mels=80, spec_augment_rate=0.05, audio_base_width=32,
        audio_block_counts=(3, 4, 6, 3), hidden_size=768, num_heads=12, ffn_size=3072,
        num_layers=6, rank=128, dropout=0.1, mask_ratio=0.15, num_negatives=512,
        temperature=0.1, sampling_temperature=0.1, target_stop_gradient=False,
        visual_mep_weight=1.0, audio_mep_weight=1.0, joint_mep_weight=1.0,
        correspondence_weight=1.0)
  config.batch_size = 128
  config.num_epochs = 100
  config.optim.name = 'sgd'
  config.optim.base_lr = 0.1
  config.optim.base_batch_size = 256
  config.optim.momentum = 0.9
  config.optim.weight_decay = 1e-4
  config.optim.schedule = 'cosine'
  config.optim.warmup_epochs = 5.0
  config.lock()
  return config
