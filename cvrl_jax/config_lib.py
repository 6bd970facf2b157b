"""Defaults shared by every config in configs/, following docs/recipes/cvrl.md.

A config file in configs/ calls `base_config()` and overrides what its experiment changes, so
every config exposes the same keys and a misspelt override fails (ml_collections configs are
locked against new keys after this function returns them).
"""
import os

import ml_collections

# CVRL's random resized crop of every clip (docs/recipes/cvrl.md, "Augmentation"): box area 30-100% of the frame,
# aspect ratio 1:2 to 2:1. The objectives, the linear probe's training clips and the on-device
# crop default to these.
CVRL_CROP_AREA_RANGE = (0.3, 1.0)
CVRL_CROP_ASPECT_RANGE = (0.5, 2.0)


def data_config() -> ml_collections.ConfigDict:
  d = ml_collections.ConfigDict()
  # Sources: a glob (comma-separated globs allowed) of DMVR TFRecords, or a TFDS dataset.
  d.train_files = ''
  d.eval_files = ''
  d.tfds_name = ''
  d.tfds_data_dir = ''
  d.tfds_train_split = 'train'
  d.tfds_eval_split = 'test'
  d.num_classes = 0
  d.num_train_examples = 0  # 0: counted from the files at start
  # Pretraining skips and counts undecodable records up to this fraction of those read (at least
  # one epoch's), then stops naming the worst file; 0 stops at the first (cvrl_jax/data/records.py).
  d.max_bad_fraction = 0.01
  # Pretraining clips: 16 frames at stride 2, cropped to 224 (docs/recipes/cvrl.md, "Temporal sampling").
  d.num_frames = 16
  d.frame_stride = 2
  d.image_size = 224
  d.sampling_power = 1.0
  d.rho_max_distance = 0  # rho sampler: max frames between clip starts, 0 = unlimited
  d.shuffle_buffer = 1024
  d.host_split = 'files'  # 'files' | 'records' (see docs/architecture.md)
  d.num_parallel_calls = -1  # -1: tf.data AUTOTUNE
  d.prefetch = 2
  # Evaluation clips (docs/recipes/cvrl.md, "Evaluation"): 32 frames at stride 2; test = 10 temporal x 3 spatial
  # crops of 256 after a short-side resize to 256.
  d.eval_num_frames = 32
  d.eval_frame_stride = 2
  d.eval_image_size = 224
  d.eval_resize = 256
  d.eval_crop_size = 256
  d.eval_num_temporal_views = 10
  d.eval_num_spatial_views = 3
  return d


def model_config() -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.depth = 50
  m.width_multiplier = 1.0
  m.stem_temporal_kernel = 5
  m.stem_temporal_stride = 2
  m.bn_momentum = 0.9
  m.bn_epsilon = 1e-5
  m.dtype = 'bfloat16'  # compute dtype; parameters stay float32
  m.remat = False
  m.conv_impl = 'auto'  # 'auto' | 'conv3d' | 'factorized'
  m.stem_max_pool = True  # False: no max-pool after the stem (VCOP's R3D)
  m.temporal_downsample = False  # basic blocks: stages 2-4 also stride 2 in time (VCOP's R3D)
  return m


def eval_config() -> ml_collections.ConfigDict:
  """Evaluation jobs and the online kNN monitor (docs/recipes/cvrl.md "Evaluation", rho_family.md "Monitoring")."""
  e = ml_collections.ConfigDict()
  e.batch_size = 64  # global videos per feature-extraction / test batch (each with all its views)
  e.test_mode = 'test_views'  # linear_eval/finetune test: 'test_views' (10 x 3 views) | 'center_clip'
  e.linear_cached_features = False  # linear_eval on cached centre-clip features: faster, no train augmentation
  # linear_eval: train the classifier on standardised L2-normalised features and fold the
  # standardisation back in (the same model, better conditioned; cvrl_jax/evaluate/linear.py).
  # Its input has unit variance per dimension (norm ~ sqrt(C)): the LR acts C times harder.
  e.linear_standardize = False
  e.knn_k = 200
  e.knn_temperature = 0.07
  e.knn_mode = 'test_views'  # clips whose features are averaged per video: 'test_views' | 'center_clip'
  # kNN / retrieval feature: 'pooled' (global average) | 'conv5_maxpool' (VCOP's: the last
  # stage max-pooled over (1, 2, 2) windows, flattened)
  e.knn_feature = 'pooled'
  # Multi-view testing (linear_eval, finetune): average the views' 'softmax' | 'logits' (VCOP)
  e.view_average = 'softmax'
  e.retrieval_ks = (1, 5, 10, 20, 50)
  e.finetune_dropout = 0.5  # before the classifier when fine-tuning
  e.monitor_max_examples = 0  # online kNN monitor: at most this many train/test videos (0 = all)
  # linear_eval / finetune: train on this class-balanced, seeded fraction of the labelled training
  # videos (1% / 10%: the semi-supervised protocol; cvrl_jax/evaluate/subsets.py).
  e.label_fraction = 1.0
  # linear_eval / finetune input: 'visual' (the video backbone, config.model) | 'audio' (the audio
  # CNN of an AVBERT run on a dataset's sounds, config.eval.audio; docs/recipes/avbert.md).
  e.modality = 'visual'
  e.audio = audio_eval_config()
  return e


def audio_eval_config() -> ml_collections.ConfigDict:
  """config.eval.audio: the audio CNN (checked against an audio init_checkpoint, used as is for
  random init) and how a sound is cut into its input windows (docs/recipes/avbert.md)."""
  a = ml_collections.ConfigDict()
  # Architecture and log-mel front end (models/audio_resnet.py), AVBERT's paper scale.
  a.base_width = 32
  a.block_counts = (3, 4, 6, 3)
  a.bn_epsilon = 1e-5
  a.sample_rate = 44_100
  a.n_fft = 2048
  a.hop_length = 512
  a.n_mels = 80
  # Windows of window_samples samples: training takes one at a random start; features and tests
  # average num_windows evenly spaced ones (the first at the sound's start, the last at its end;
  # zeros past the end of a shorter sound).
  a.window_samples = 65_024  # 128 log-mel frames at hop 512, AVBERT's pretraining window
  a.num_windows = 4
  a.spec_augment_rate = 0.0  # finetune's training windows only (never at evaluation)
  return a


def base_config() -> ml_collections.ConfigDict:
  """CVRL R3D-50 pretraining defaults; experiments override data and scale."""
  c = ml_collections.ConfigDict()
  c.job = 'pretrain'  # 'pretrain' | 'linear_eval' | 'knn_eval' | 'finetune'
  c.seed = 0
  c.init_checkpoint = ''
  c.batch_size = 1024  # global, in videos (2 clips each for CVRL)
  c.num_epochs = 200
  c.num_train_steps = 0  # > 0 overrides num_epochs

  c.data = data_config()
  c.model = model_config()

  c.objective = ml_collections.ConfigDict()
  c.objective.name = 'cvrl'
  c.objective.temperature = 0.1
  c.objective.head_hidden_dim = 2048
  c.objective.head_num_layers = 3
  c.objective.head_output_dim = 128
  c.objective.head_bn_momentum = 0.997
  # Augmentation policy names (cvrl_jax.augment.POLICIES), one per clip; empty: the objective's.
  c.objective.augment_policies = ()
  # Host-side random resized crop of every clip, (low, high); empty: the objective's own
  # (CVRL: area 0.3-1.0, aspect 0.5-2.0; the rho-family's aug+: 0.2-0.766, 0.75-1.333).
  c.objective.crop_area_range = ()
  c.objective.crop_aspect_range = ()

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'sgd'  # 'sgd' | 'lars'
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.base_lr = 0.32  # at batch 1024; lr = base_lr * batch_size / base_batch_size
  c.optim.base_batch_size = 1024
  c.optim.warmup_epochs = 5.0
  c.optim.schedule = 'cosine'  # 'cosine' | 'constant' | 'step' (cvrl_jax.optim)
  c.optim.final_lr_fraction = 0.0  # 'cosine' ends at peak * this
  # 'step': the learning rate is multiplied by decay_factor at each of decay_epochs, or of
  # decay_steps (for recipes counted in iterations; set one of the two).
  c.optim.decay_epochs = ()
  c.optim.decay_steps = ()
  c.optim.decay_factor = 0.1
  c.optim.weight_decay = 1e-6
  c.optim.lars_trust_coefficient = 0.001

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1: all devices not used by other axes
  c.mesh.fsdp = 1

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 1000
  c.checkpoint.keep = 3  # the last N checkpoints stay
  c.checkpoint.keep_every_steps = 0  # > 0: also every checkpoint at a multiple of N steps stays
  c.checkpoint.async_save = True

  c.mesh.fsdp_min_size = 2**18  # parameters with fewer elements stay replicated

  c.log_every_steps = 100
  c.profile = False  # a clu Profile trace of a few steps (TensorBoard 'profile' tab)
  c.knn_every_steps = 0  # > 0: the online kNN monitor (cvrl_jax.evaluate) every N steps
  # > 0: pretext accuracy on held-out tuples of data.eval_files every N steps (pretext methods)
  c.pretext_every_steps = 0
  c.eval = eval_config()
  c.lock()
  return c


# ----------------------------------------------------------------------------------------------
# Validation: one clear sentence per bad value, before anything expensive starts.
# ----------------------------------------------------------------------------------------------
_CHOICES = {
    'optim.name': ('sgd', 'lars'),
    'optim.schedule': ('cosine', 'constant', 'step'),
    'model.dtype': ('float32', 'bfloat16'),
    'data.host_split': ('files', 'records'),
}
_POSITIVE = ('batch_size', 'log_every_steps', 'optim.base_batch_size', 'checkpoint.keep',
             'data.num_frames', 'data.frame_stride', 'data.image_size')
_NON_NEGATIVE = ('num_epochs', 'num_train_steps', 'optim.base_lr', 'optim.weight_decay',
                 'optim.warmup_epochs', 'optim.lars_trust_coefficient', 'checkpoint.every_steps',
                 'checkpoint.keep_every_steps', 'knn_every_steps', 'pretext_every_steps',
                 'data.num_train_examples', 'data.num_classes')


# The experiment configs live next to the package (configs/ of a checkout), not in it.
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')


def load_config_file(name: str, *args) -> ml_collections.ConfigDict:
  """configs/NAME.py's get_config(*args)."""
  path = os.path.join(CONFIGS_DIR, f'{name}.py')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} is missing: this needs a checkout of cvrl_jax (configs/).')
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(f'cvrl_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*args)


def demo_base_config(data_dir: str, *, num_frames: int,
                     frame_stride: int) -> ml_collections.ConfigDict:
  """base_config() on the demo videos of `data_dir` (cvrl_jax.data.demo, or other videos converted
  into that layout), with the demo's backbone: train/test shards, the number of classes from
  labels.txt (10, the digits, before the data exists), 32 x 32 training and evaluation clips,
  R3D-18 at a quarter width in float32. Every demo config in configs/ starts from it."""
  from cvrl_jax.data import dmvr  # pylint: disable=g-import-not-at-top  (TensorFlow)
  config = base_config()
  config.data.train_files = os.path.join(data_dir, 'train-*-of-*.tfrecord')
  config.data.eval_files = os.path.join(data_dir, 'test-*-of-*.tfrecord')
  config.data.num_classes = len(dmvr.read_labels(data_dir) or range(10))
  config.data.num_frames = num_frames
  config.data.frame_stride = frame_stride
  config.data.image_size = 32
  config.data.shuffle_buffer = 256
  config.data.eval_num_frames = 8
  config.data.eval_image_size = 32
  config.data.eval_resize = 32
  config.data.eval_crop_size = 32
  config.model.depth = 18
  config.model.width_multiplier = 0.25
  config.model.dtype = 'float32'  # CPUs have no fast bfloat16 convolutions
  return config


def get(config: ml_collections.ConfigDict, dotted: str):
  value = config
  for part in dotted.split('.'):
    value = value[part]
  return value


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first bad value (checks that need no devices or files)."""
  for key, choices in _CHOICES.items():
    if get(config, key) not in choices:
      raise ValueError(f'config.{key} must be one of {choices}, got {get(config, key)!r}.')
  for key in _POSITIVE:
    if not get(config, key) > 0:
      raise ValueError(f'config.{key} must be positive, got {get(config, key)!r}.')
  for key in _NON_NEGATIVE:
    if not get(config, key) >= 0:
      raise ValueError(f'config.{key} must be >= 0, got {get(config, key)!r}.')
  if config.num_train_steps == 0 and config.num_epochs == 0:
    raise ValueError('Set config.num_epochs or config.num_train_steps to a positive value.')
  if not 0.0 < config.eval.label_fraction <= 1.0:
    raise ValueError('config.eval.label_fraction must be in (0, 1], got '
                     f'{config.eval.label_fraction!r}.')
  every, keep_every = config.checkpoint.every_steps, config.checkpoint.keep_every_steps
  if keep_every > 0 and (every == 0 or keep_every % every):
    raise ValueError(f'config.checkpoint.keep_every_steps={keep_every} must be a multiple of '
                     f'config.checkpoint.every_steps={every}, the steps checkpoints are written '
                     'at.')
  if not 0.0 <= config.data.max_bad_fraction < 1.0:
    raise ValueError('config.data.max_bad_fraction must be in [0, 1), got '
                     f'{config.data.max_bad_fraction!r}.')
  if not 0.0 <= config.optim.final_lr_fraction <= 1.0:
    raise ValueError('config.optim.final_lr_fraction must be in [0, 1], got '
                     f'{config.optim.final_lr_fraction!r}.')
  if config.optim.schedule == 'step':
    epochs, steps = tuple(config.optim.decay_epochs), tuple(config.optim.decay_steps)
    if bool(epochs) == bool(steps):
      raise ValueError("config.optim.schedule='step' needs one of config.optim.decay_epochs and "
                       f'config.optim.decay_steps, got {epochs!r} and {steps!r}.')
    boundaries = epochs or steps
    if list(boundaries) != sorted(set(boundaries)) or boundaries[0] <= 0:
      raise ValueError(f"config.optim.decay_{'epochs' if epochs else 'steps'} must increase and "
                       f'be > 0, got {boundaries!r}.')
    if not 0.0 < config.optim.decay_factor < 1.0:
      raise ValueError('config.optim.decay_factor must be in (0, 1), got '
                       f'{config.optim.decay_factor!r}.')
  if not 0.0 <= config.optim.momentum < 1.0:
    raise ValueError(f'config.optim.momentum must be in [0, 1), got {config.optim.momentum!r}.')

