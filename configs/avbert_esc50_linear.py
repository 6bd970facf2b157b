"""Linear probe of AVBERT's audio CNN on ESC-50 (docs/recipes/avbert.md, "Audio-only evaluation").

  python -m cvrl_jax.convert --input /data/ESC-50-master --output /data/esc50 --audio-only
  python -m cvrl_jax.export --workdir=/tmp/avbert --part=audio          # -> /tmp/avbert/audio_backbone
  python -m cvrl_jax.main --config=configs/avbert_esc50_linear.py:/data/esc50,1 \
      --workdir=/tmp/esc50_linear_fold1 --config.init_checkpoint=/tmp/avbert/audio_backbone

The argument is the converted folder and the held-out fold (1 by default): the converter writes
ESC-50's five folds as the splits fold1 ... fold5; this config trains on the other four (1,600
sounds) and tests on the held-out one (400). ESC-50's protocol is 5-fold cross-validation: run the
five folds into five workdirs and report the mean of their linear_cached_features/top1.

The paper reports 85.9% top-1 for a linear classifier on the frozen audio CNN. The audio CNN and
its front end are the pretraining run's (the paper-scale AVBERT config: 44.1 kHz, 80 mel bins,
FFT 2048, hop 512, the half-width separable ResNet-50); an init_checkpoint with another audio CNN
stops with one sentence naming the differing keys. The input windows and the probe's schedule
are our choices, the paper's public code giving neither: a sound's feature is the mean of the
audio CNN's pooled features over 4 evenly spaced windows of 65,024 samples (1.47 s, 128 log-mel
frames: the pretraining window) spanning its 5 s, BatchNorm in inference mode, no SpecAugment;
the classifier (Dense(50) on the L2-normalised feature, trained in standardised coordinates)
trains on these cached features with SGD momentum 0.9, LR 0.1 at batch 256 scaled linearly,
cosine over 100 epochs, no weight decay (not tuned). --config.job=finetune fine-tunes the audio
CNN instead (random training windows, SpecAugment at 0.05 on them).
"""
import ml_collections

from cvrl_jax import config_lib

NUM_FOLDS = 5


def get_config(arg: str = 'esc50,1') -> ml_collections.ConfigDict:
  data_dir, _, fold = arg.rpartition(',') if ',' in arg else (arg, ',', '1')
  if not fold.isdigit() or not 1 <= int(fold) <= NUM_FOLDS:
    raise ValueError(f'The held-out ESC-50 fold (after the comma in --config=...:DIR,FOLD) must '
                     f'be 1 to {NUM_FOLDS}, got {fold!r}.')
  held_out = int(fold)
  config = config_lib.base_config()
  config.job = 'linear_eval'
  config.init_checkpoint = ''  # an audio export or an AVBERT workdir (empty: random init)
  config.data.train_files = ','.join(f'{data_dir}/fold{k}-*-of-*.tfrecord'
                                     for k in range(1, NUM_FOLDS + 1) if k != held_out)
  config.data.eval_files = f'{data_dir}/fold{held_out}-*-of-*.tfrecord'
  config.data.num_classes = 50
  config.data.num_train_examples = 0  # counted: 1,600 with the released data

  config.model.dtype = 'float32'
  config.eval.modality = 'audio'
  config.eval.audio.sample_rate = 44_100
  config.eval.audio.n_mels = 80
  config.eval.audio.n_fft = 2048
  config.eval.audio.hop_length = 512
  config.eval.audio.base_width = 32
  config.eval.audio.block_counts = (3, 4, 6, 3)
  config.eval.audio.window_samples = 65_024
  config.eval.audio.num_windows = 4
  config.eval.audio.spec_augment_rate = 0.05  # finetune's training windows only
  config.eval.test_mode = 'test_views'
  config.eval.linear_cached_features = True
  config.eval.linear_standardize = True
  config.eval.finetune_dropout = 0.5
  config.eval.batch_size = 64

  config.batch_size = 256
  config.num_epochs = 100
  config.optim.name = 'sgd'
  config.optim.momentum = 0.9
  config.optim.base_lr = 0.1
  config.optim.base_batch_size = 256
  config.optim.warmup_epochs = 0.0
  config.optim.schedule = 'cosine'
  config.optim.weight_decay = 0.0
  config.checkpoint.every_steps = 500
  config.log_every_steps = 50
  return config
