"""AVBERT on the moving-MNIST demo videos with sound: configs/demo.py's data, backbone and seed.

  python -m cvrl_jax.data.demo --output demo_av --audio
  python -m cvrl_jax.main --config=configs/avbert_demo.py:/path/to/demo_av --workdir=/tmp/avbert

The recipe (docs/recipes/avbert.md) shrunk so a CPU run takes minutes: 4 clips of 4 frames spread
over the whole 40-frame video (the paper: 10 over 30 s), 32 x 32; per clip 0.5 s of the 8 kHz
track (4,000 samples) -> 80 mel bins x 32 frames (FFT 512, hop 128); the audio CNN at width 8 with
one block per stage; a Transformer of hidden 64, 4 heads, FFN 128, 2 applications of the shared
layer, rank 16. One of the 4 clips masked per modality, 16 content-aware negatives from the
batch's 64 clips; the loss weights and temperatures of the paper-scale config. SGD at LR 0.03,
cosine (not tuned).
"""
from cvrl_jax import config_lib
from cvrl_jax import objectives


def get_config(data_dir: str = 'demo_data'):
  config = config_lib.demo_base_config(data_dir, num_frames=4, frame_stride=1)
  config.model.width_multiplier = 0.125

  with config.unlocked():
    config.objective = objectives.objective_config(
        'avbert', num_clips=4, clip_frames=4, clip_stride=1, max_span=0,
        augment_policy='flip_only', sample_rate=8_000, audio_samples=4_000, n_fft=512,
        hop_length=128, n_mels=80, spec_augment_rate=0.05, audio_base_width=8,
        audio_block_counts=(1, 1, 1, 1), hidden_size=64, num_heads=4, ffn_size=128,
        num_layers=2, rank=16, dropout=0.1, mask_ratio=0.25, num_negatives=16,
        temperature=0.1, sampling_temperature=0.1, target_stop_gradient=False,
        visual_mep_weight=1.0, audio_mep_weight=1.0, joint_mep_weight=1.0,
        correspondence_weight=1.0)
  config.objective.crop_area_range = (0.6, 1.0)
  config.objective.crop_aspect_range = (0.75, 1.333)

  config.batch_size = 16
  config.num_epochs = 5
  config.optim.name = 'sgd'
  config.optim.base_lr = 0.03
  config.optim.base_batch_size = 16
  config.optim.momentum = 0.9
  config.optim.weight_decay = 1e-4
  config.optim.schedule = 'cosine'
  config.optim.warmup_epochs = 0.0
  config.checkpoint.every_steps = 100
  config.log_every_steps = 10
  config.lock()
  return config
