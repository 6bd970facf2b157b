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
from collections.abc import Callable, Sequence
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
