"""Audio-only linear probe (or fine-tuning) of the AVBERT demo's audio CNN on a small folder of
labelled sounds (docs/recipes/avbert.md, "Audio-only evaluation").

  python -m cvrl_jax.convert --input SOUNDS/train --output /tmp/sounds --audio-only \
      --audio-rate 8000 --split-name train
  python -m cvrl_jax.convert --input SOUNDS/test --output /tmp/sounds --audio-only \
      --audio-rate 8000 --split-name test
  python -m cvrl_jax.main --config=configs/avbert_audio_demo.py:/tmp/sounds \
      --workdir=/tmp/sounds_linear --config.init_checkpoint=/tmp/avbert   # the demo's run

SOUNDS/train and SOUNDS/test hold one sub-folder of sound files per class. The audio CNN and its
front end are configs/avbert_demo.py's (8 kHz, 80 mel bins, FFT 512, hop 128, width 8, one
block per stage), so the AVBERT demo's workdir (or its `export --part=audio`) loads; left empty,
the same network at random initialisation is evaluated. Windows of 4,000 samples (0.5 s, the
demo's pretraining window), 2 per sound at test time; cached features, standardised probe.
"""
import ml_collections

from cvrl_jax import config_lib
from cvrl_jax.data import dmvr


def get_config(data_dir: str = 'sounds') -> ml_collections.ConfigDict:
  config = config_lib.base_config()
  config.job = 'linear_eval'
  config.init_checkpoint = ''
  config.data.train_files = f'{data_dir}/train-*-of-*.tfrecord'
  config.data.eval_files = f'{data_dir}/test-*-of-*.tfrecord'
  config.data.num_classes = len(dmvr.read_labels(data_dir) or range(10))
  config.data.shuffle_buffer = 256

  config.model.dtype = 'float32'  # CPUs have no fast bfloat16 convolutions
  config.eval.modality = 'audio'
  config.eval.audio.sample_rate = 8_000
  config.eval.audio.n_mels = 80
  config.eval.audio.n_fft = 512
  config.eval.audio.hop_length = 128
  config.eval.audio.base_width = 8
  config.eval.audio.block_counts = (1, 1, 1, 1)
  config.eval.audio.window_samples = 4_000
  config.eval.audio.num_windows = 2
  config.eval.audio.spec_augment_rate = 0.05  # finetune's training windows only
  config.eval.test_mode = 'test_views'
  config.eval.linear_cached_features = True
  config.eval.linear_standardize = True
  config.eval.batch_size = 16

  config.batch_size = 16
  config.num_epochs = 30
  config.optim.name = 'sgd'
  config.optim.momentum = 0.9
  config.optim.base_lr = 0.1
  config.optim.base_batch_size = 16
  config.optim.warmup_epochs = 0.0
  config.optim.schedule = 'cosine'
  config.optim.weight_decay = 0.0
  config.checkpoint.every_steps = 100
  config.log_every_steps = 10
  return config
