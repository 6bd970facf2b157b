"""The audio CNN of the audio-visual method: a half-width 2D ResNet-50 on log-mel spectrograms.

Input `[N, time_frames, n_mels, 1]` (the layout `cvrl_jax.audio.log_mel_spectrogram` returns, with
a channel axis added); output pooled float32 features `[N, 32 * base_width]` (1024 at the paper's
half width, base_width 32, against ResNet-50's 2048).

The layout follows the authors' released audio ResNet (docs/architecture.md, "Audio-visual
models"):

- stem: a separable 9x9 convolution, stride 1, base_width channels; no max-pool;
- four stages of bottleneck blocks [3, 4, 6, 3]: 1x1 -> 3x3 (carrying the stride) -> 1x1 to 4x
  width, inner widths base_width * (1, 2, 4, 8), every stage strided 2 in both axes (so time and
  frequency shrink 16x in all), BN after every convolution, a 1x1 strided projection shortcut
  where the shape changes; the last BN of each block starts at zero (the authors' configs set
  ZERO_INIT_FINAL_BN);
- "separable": a k x k convolution becomes a k-tap convolution along frequency, BN, ReLU, then a
  k-tap convolution along time, BN, ReLU (the frequency conv carries the frequency stride, the
  time conv the time stride). In this layout (time, frequency) that is kernel (1, k) then (k, 1).
  The stem and the 3x3 of the first two stages are separable, the 3x3 of stages 3-4 is a full 3x3
  (as in the authors' code); `separable_stages` changes that.

`spec_augment` is the training-time masking (one time band and one frequency band per example).
"""
from collections.abc import Callable, Mapping, Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvrl_jax.models import conv as conv_lib
from cvrl_jax.models import resnet3d

ModuleDef = Callable[..., nn.Module]

STEM_KERNEL = 9
STAGE_STRIDES = (2, 2, 2, 2)
SEPARABLE_STAGES = (True, True, False, False)
HALF_WIDTH = 32  # ResNet-50's 64 halved


class SeparableConv(nn.Module):
  """k taps along frequency -> BN -> ReLU -> k taps along time -> BN -> ReLU, on [N, T, F, C]."""
  features: int
  kernel: int
  stride: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    k, s = self.kernel, self.stride
    x = self.conv(self.features, (1, k), (1, s), name='freq_conv')(x)
    x = nn.relu(self.norm(name='freq_bn')(x, use_running_average=not train))
    x = self.conv(self.features, (k, 1), (s, 1), name='time_conv')(x)
    return nn.relu(self.norm(name='time_bn')(x, use_running_average=not train))


class AudioBottleneckBlock(nn.Module):
  """1x1 -> 3x3 strided (separable or full) -> 1x1 x4, BN after each, projection shortcut."""
  filters: int
  stride: int
  separable: bool
  conv: ModuleDef
  norm: ModuleDef
  zero_init_last_bn: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    out_filters = self.filters * resnet3d.BOTTLENECK_EXPANSION
    s = self.stride
    y = self.conv(self.filters, (1, 1), name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y, use_running_average=not train))
    if self.separable:
      y = SeparableConv(self.filters, 3, s, self.conv, self.norm, name='conv2')(y, train)
    else:
      y = self.conv(self.filters, (3, 3), (s, s), name='conv2')(y)
      y = nn.relu(self.norm(name='bn2')(y, use_running_average=not train))
    y = self.conv(out_filters, (1, 1), name='conv3')(y)
    last_init = nn.initializers.zeros if self.zero_init_last_bn else nn.initializers.ones
    y = self.norm(name='bn3', scale_init=last_init)(y, use_running_average=not train)
    shortcut = x
    if x.shape[-1] != out_filters or s != 1:
      shortcut = self.conv(out_filters, (1, 1), (s, s), name='shortcut_conv')(x)
      shortcut = self.norm(name='shortcut_bn')(shortcut, use_running_average=not train)
    return nn.relu(y + shortcut)


class AudioResNet(nn.Module):
  """Log-mel [N, T, F, 1] -> pooled float32 features [N, 32 * base_width] (4 stages)."""
  base_width: int = HALF_WIDTH
  block_counts: Sequence[int] = resnet3d.BLOCK_COUNTS[50]
  stage_strides: Sequence[int] = STAGE_STRIDES
  separable_stages: Sequence[bool] = SEPARABLE_STAGES
  stem_kernel: int = STEM_KERNEL
  zero_init_last_bn: bool = True
  bn_momentum: float = 0.9  # PyTorch momentum 0.1 in the authors' code
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @property
  def num_features(self) -> int:
    return self.base_width * 2 ** (len(self.block_counts) - 1) * resnet3d.BOTTLENECK_EXPANSION

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Pooled features of log-mel spectrograms x [N, time_frames, n_mels, 1]."""
    if x.ndim != 4 or x.shape[-1] != 1:
      raise ValueError(f'AudioResNet expects log-mel input [N, time_frames, n_mels, 1], got shape '
                       f'{x.shape}.')
    num_stages = len(self.block_counts)
    if len(self.stage_strides) != num_stages or len(self.separable_stages) != num_stages:
      raise ValueError(f'AudioResNet needs one stride and one separable flag per stage '
                       f'({num_stages}), got {tuple(self.stage_strides)} and '
                       f'{tuple(self.separable_stages)}.')
    conv = functools.partial(nn.Conv, padding='SAME', use_bias=False, dtype=self.dtype,
                             kernel_init=conv_lib.default_kernel_init)
    norm = functools.partial(nn.BatchNorm, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                             dtype=self.dtype)
    x = x.astype(self.dtype)
    x = SeparableConv(self.base_width, self.stem_kernel, 1, conv, norm, name='stem')(x, train)
    for i, num_blocks in enumerate(self.block_counts):
      for j in range(num_blocks):
        x = AudioBottleneckBlock(
            filters=self.base_width * 2 ** i,
            stride=self.stage_strides[i] if j == 0 else 1,
            separable=bool(self.separable_stages[i]), conv=conv, norm=norm,
            zero_init_last_bn=self.zero_init_last_bn, name=f'stage{i + 1}_block{j + 1}')(x, train)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def _band_mask(key: jax.Array, size: int, max_width: int, batch: int) -> jax.Array:
  """[batch, size] bool, per row one band of width ~ U{0..max_width} at a uniform start."""
  width_key, start_key = jax.random.split(key)
  width = jax.random.randint(width_key, (batch, 1), 0, max_width + 1)
  start = jax.random.randint(start_key, (batch, 1), 0, size - width + 1)
  idx = jnp.arange(size)[None, :]
  return (idx >= start) & (idx < start + width)


def max_mask_width(size: int, rate: float) -> int:
  """The widest band `spec_augment` masks on an axis of `size` bins at `rate`."""
  return int(size * rate)


@functools.partial(jax.jit, static_argnames=('time_rate', 'freq_rate', 'mask_value'))
def spec_augment(key: jax.Array, spectrogram: jax.Array, time_rate: float = 0.05,
                 freq_rate: float = 0.05, mask_value: float = 0.0) -> jax.Array:
  """SpecAugment-style masking of [N, T, F] or [N, T, F, 1] log-mel spectrograms (training only).

  Per example, one band of consecutive time frames and one of consecutive mel bins are set to
  `mask_value`; each band's width is uniform in {0, ..., floor(rate * axis length)} and its start
  uniform over the positions where it fits (the authors' TIME_MASK_RATE / FREQUENCY_MASK_RATE of
  0.05: up to 6 of 128 frames and 4 of 80 mel bins). The same key gives the same masks.
  """
  if spectrogram.ndim not in (3, 4):
    raise ValueError(f'spec_augment expects spectrograms [N, T, F] or [N, T, F, 1], got shape '
                     f'{spectrogram.shape}.')
  for name, rate in (('time_rate', time_rate), ('freq_rate', freq_rate)):
    if not 0.0 <= rate < 1.0:
      raise ValueError(f'spec_augment {name} must be in [0, 1), got {rate}.')
  n, t, f = spectrogram.shape[:3]
  time_key, freq_key = jax.random.split(key)
  time_mask = _band_mask(time_key, t, max_mask_width(t, time_rate), n)[:, :, None]
  freq_mask = _band_mask(freq_key, f, max_mask_width(f, freq_rate), n)[:, None, :]
  masked = time_mask | freq_mask
  if spectrogram.ndim == 4:
    masked = masked[..., None]
  return jnp.where(masked, jnp.asarray(mask_value, spectrogram.dtype), spectrogram)


# ------------------------------------------------------------------------------------------------
# The audio CNN as an evaluation encoder: waveforms in, pooled features out.
# ------------------------------------------------------------------------------------------------
# Keys of an audio CNN's config (config.eval.audio, an audio export's 'model') that define its
# parameters or its function: the network and the log-mel front end it was trained on.
AUDIO_ARCHITECTURE_KEYS = ('base_width', 'block_counts', 'bn_epsilon', 'sample_rate', 'n_fft',
                           'hop_length', 'n_mels')
# The front end's settings; the rest of the architecture keys are AudioResNet fields.
MEL_KEYS = ('sample_rate', 'n_fft', 'hop_length', 'n_mels')


class AudioEncoder(AudioResNet):
  """Mono waveforms float32 [N, A] -> log-mel (cvrl_jax.audio, on the device) -> AudioResNet
  pooled features [N, num_features]. Its variables are exactly AudioResNet's. SpecAugment
  (`spec_augment_rate` > 0) only when train=True, with the 'dropout' rng."""
  sample_rate: int = 44_100
  n_fft: int = 2048
  hop_length: int = 512
  n_mels: int = 80
  spec_augment_rate: float = 0.0

  def spectrogram(self, waveform: jax.Array) -> jax.Array:
    from cvrl_jax import audio as audio_lib  # pylint: disable=g-import-not-at-top
    return audio_lib.log_mel_spectrogram(
        waveform.astype(jnp.float32), sample_rate=self.sample_rate, n_fft=self.n_fft,
        hop_length=self.hop_length, n_mels=self.n_mels)

  def __call__(self, waveform: jax.Array, train: bool) -> jax.Array:
    if waveform.ndim != 2:
      raise ValueError(f'AudioEncoder expects waveforms [N, samples], got shape '
                       f'{waveform.shape}.')
    spec = self.spectrogram(waveform)
    if train and self.spec_augment_rate > 0:
      spec = spec_augment(self.make_rng('dropout'), spec, self.spec_augment_rate,
                          self.spec_augment_rate)
    return super().__call__(spec[..., None], train)

  def dummy_input_shape(self) -> tuple[int, int]:
    """A waveform batch shape that builds every parameter (shapes do not depend on length)."""
    return (1, 2 * self.n_fft)


def describe(cfg) -> str:
  return (f'AudioResNet (base width {cfg["base_width"]}, blocks '
          f'{tuple(cfg["block_counts"])}, {cfg["n_mels"]} mels at {cfg["sample_rate"]} Hz)')


def check_audio_config(cfg, where: str = 'config.eval.audio') -> None:
  """Raises one ValueError sentence naming the first bad key of an audio CNN config."""
  for key in ('base_width', 'sample_rate', 'n_fft', 'hop_length', 'n_mels'):
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ValueError(f'{where}.{key} must be a positive whole number, got {value!r}.')
  counts = tuple(cfg['block_counts'])
  if not counts or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts):
    raise ValueError(f'{where}.block_counts must be positive block counts per stage, got '
                     f'{counts!r}.')
  from cvrl_jax import audio as audio_lib  # pylint: disable=g-import-not-at-top
  try:
    audio_lib.check_parameters(fmin=0.0, fmax=None, **{k: cfg[k] for k in MEL_KEYS})
  except ValueError as e:
    raise ValueError(f'{where}: {e}') from None


def build_audio_encoder(cfg, *, dtype: Any = jnp.float32,
                        spec_augment_rate: float = 0.0) -> AudioEncoder:
  """The AudioEncoder of an audio CNN config (AVBERT's layout: every stage strided 2, the first
  two separable; objectives/avbert.py builds the same network for pretraining)."""
  check_audio_config(cfg)
  counts = tuple(int(n) for n in cfg['block_counts'])
  return AudioEncoder(
      base_width=int(cfg['base_width']), block_counts=counts, stage_strides=(2,) * len(counts),
      separable_stages=tuple(i < 2 for i in range(len(counts))),
      bn_epsilon=float(cfg['bn_epsilon']), dtype=dtype,
      spec_augment_rate=float(spec_augment_rate),
      **{k: int(cfg[k]) for k in MEL_KEYS})


def config_from_avbert(objective: Mapping[str, Any], model: Mapping[str, Any]) -> dict:
  """The audio CNN config of an AVBERT pretraining config (config.objective, config.model)."""
  return {'base_width': int(objective['audio_base_width']),
          'block_counts': [int(n) for n in objective['audio_block_counts']],
          'bn_epsilon': float(model.get('bn_epsilon', 1e-5)),
          **{k: int(objective[k]) for k in MEL_KEYS}}
