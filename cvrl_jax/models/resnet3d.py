"""R3D backbones (R3D-18/34 basic blocks, R3D-50/101/152 bottlenecks) as in CVRL.

The bottleneck network follows docs/recipes/cvrl.md "Backbone" (the reference's ResNet3D with
CVRL's block specs): stem conv (kt, 7, 7) stride (ts, 2, 2), BN, ReLU, max-pool (1, 3, 3) stride
(1, 2, 2); four stages whose blocks are (kt, 1, 1) -> (1, 3, 3) carrying the spatial stride ->
(1, 1, 1) to 4x width, BN after every conv, temporal kernel kt = 1, 1, 3, 3 per stage; shortcut
(1, 1, 1) strided conv + BN where the shape changes. BN scales start at one (the reference does
not zero-initialise the last BN of a block). There is no temporal stride after the stem.

R3D-10/18/34 use basic blocks of two (3, 3, 3) convolutions, the common R3D definition (Hara et al.,
torchvision's r3d_18), with the same stem and, like the bottleneck networks here, spatial-only
strides, so the temporal resolution stays what the stem leaves. VCOP's R3D (docs/recipes/pretext.md)
is depth 10 (one basic block per stage) with `stem_max_pool=False` and `temporal_downsample=True`
(stages 2-4 stride 2 in time too) and a (3, 7, 7) stem of stride (1, 2, 2).

All inputs are NDHWC. Parameters are float32; `dtype` sets the compute dtype (features are
returned in float32).
"""
from collections.abc import Callable
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from cvrl_jax.models import conv as conv_lib

BLOCK_COUNTS = {
    10: (1, 1, 1, 1),  # VCOP's R3D: one basic block per stage
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
BOTTLENECK_DEPTHS = (50, 101, 152)
# Temporal kernel of each bottleneck block's first (kt, 1, 1) conv, per stage (CVRL's R3D-50).
BOTTLENECK_TEMPORAL_KERNELS = (1, 1, 3, 3)
STAGE_WIDTHS = (64, 128, 256, 512)
STEM_WIDTH = 64
BOTTLENECK_EXPANSION = 4
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

ModuleDef = Callable[..., nn.Module]


def scaled_width(channels: int, multiplier: float) -> int:
  """Channel count under a width multiplier: nearest integer, at least 1."""
  return max(1, int(round(channels * multiplier)))


class BottleneckBlock(nn.Module):
  """(kt,1,1) -> (1,3,3) strided -> (1,1,1) x4, BN after each, projection shortcut if needed."""
  filters: int
  temporal_kernel: int
  spatial_stride: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    out_filters = self.filters * BOTTLENECK_EXPANSION
    s = self.spatial_stride
    y = self.conv(self.filters, (self.temporal_kernel, 1, 1), name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y, use_running_average=not train))
    y = self.conv(self.filters, (1, 3, 3), (1, s, s), name='conv2')(y)
    y = nn.relu(self.norm(name='bn2')(y, use_running_average=not train))
    y = self.conv(out_filters, (1, 1, 1), name='conv3')(y)
    y = self.norm(name='bn3')(y, use_running_average=not train)
    shortcut = x
    if x.shape[-1] != out_filters or s != 1:
      shortcut = self.conv(out_filters, (1, 1, 1), (1, s, s), name='shortcut_conv')(x)
      shortcut = self.norm(name='shortcut_bn')(shortcut, use_running_average=not train)
    return nn.relu(y + shortcut)


class BasicBlock(nn.Module):
  """(3,3,3) strided -> (3,3,3), BN after each, projection shortcut if needed."""
  filters: int
  spatial_stride: int
  conv: ModuleDef
  norm: ModuleDef
  temporal_stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    s, ts = self.spatial_stride, self.temporal_stride
    y = self.conv(self.filters, (3, 3, 3), (ts, s, s), name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y, use_running_average=not train))
    y = self.conv(self.filters, (3, 3, 3), name='conv2')(y)
    y = self.norm(name='bn2')(y, use_running_average=not train)
    shortcut = x
    if x.shape[-1] != self.filters or s != 1 or ts != 1:
      shortcut = self.conv(self.filters, (1, 1, 1), (ts, s, s), name='shortcut_conv')(x)
      shortcut = self.norm(name='shortcut_bn')(shortcut, use_running_average=not train)
    return nn.relu(y + shortcut)


class ResNet3D(nn.Module):
  """R3D backbone: clips [N, T, H, W, 3] in [0, 1] -> pooled float32 features [N, C]."""
  depth: int = 50
  width_multiplier: float = 1.0
  stem_temporal_kernel: int = 5
  stem_temporal_stride: int = 2
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32
  remat: bool = False
  conv_impl: str = 'auto'
  stem_max_pool: bool = True
  # Basic blocks only: stages 2-4 also halve the time axis (VCOP's R3D); CVRL's keep it.
  temporal_downsample: bool = False

  @property
  def num_features(self) -> int:
    expansion = BOTTLENECK_EXPANSION if self.depth in BOTTLENECK_DEPTHS else 1
    return scaled_width(STAGE_WIDTHS[-1], self.width_multiplier) * expansion

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, return_stages: bool = False
               ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
    """Pooled features; with `return_stages` also {'stem', 'stage1'..'stage4': NDHWC outputs}.

    Args:
      x: float clips [N, T, H, W, 3], pixels in [0, 1].
      train: BN normalises with batch statistics and updates `batch_stats` (apply with
        mutable=['batch_stats']); otherwise it uses the running averages.
      return_stages: also return the stem (after max-pool) and stage outputs, in compute dtype.
    """
    if self.depth not in BLOCK_COUNTS:
      raise ValueError(f'model.depth must be one of {sorted(BLOCK_COUNTS)}, got {self.depth}.')
    if x.ndim != 5 or x.shape[-1] != 3:
      raise ValueError(f'ResNet3D expects clips [N, T, H, W, 3], got shape {x.shape}.')
    impl = conv_lib.resolve_conv_impl(self.conv_impl)
    conv = functools.partial(conv_lib.Conv3D, impl=impl, dtype=self.dtype)
    norm = functools.partial(nn.BatchNorm, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                             dtype=self.dtype)
    bottleneck = self.depth in BOTTLENECK_DEPTHS
    block_cls = BottleneckBlock if bottleneck else BasicBlock
    if self.remat:
      block_cls = nn.remat(block_cls, static_argnums=(2,))  # (self, x, train): train is static.

    x = x.astype(self.dtype)
    x = conv(scaled_width(STEM_WIDTH, self.width_multiplier),
             (self.stem_temporal_kernel, 7, 7), (self.stem_temporal_stride, 2, 2),
             name='stem_conv')(x)
    x = nn.relu(norm(name='stem_bn')(x, use_running_average=not train))
    if self.stem_max_pool:
      x = nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding='SAME')
    stages = {'stem': x}
    for i, num_blocks in enumerate(BLOCK_COUNTS[self.depth]):
      filters = scaled_width(STAGE_WIDTHS[i], self.width_multiplier)
      for j in range(num_blocks):
        stride = 2 if i > 0 and j == 0 else 1
        kwargs = dict(filters=filters, spatial_stride=stride, conv=conv, norm=norm,
                      name=f'stage{i + 1}_block{j + 1}')
        if bottleneck:
          kwargs['temporal_kernel'] = BOTTLENECK_TEMPORAL_KERNELS[i]
        elif self.temporal_downsample:
          kwargs['temporal_stride'] = stride
        x = block_cls(**kwargs)(x, train)
      stages[f'stage{i + 1}'] = x
    features = jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))
    return (features, stages) if return_stages else features


def build_backbone(model_cfg: ml_collections.ConfigDict) -> ResNet3D:
  """ResNet3D from `config.model` (keys of `config_lib.model_config()`), validated."""
  if model_cfg.depth not in BLOCK_COUNTS:
    raise ValueError(f'model.depth must be one of {sorted(BLOCK_COUNTS)}, got {model_cfg.depth}.')
  if model_cfg.dtype not in DTYPES:
    raise ValueError(f'model.dtype must be one of {sorted(DTYPES)}, got {model_cfg.dtype!r}.')
  if not model_cfg.width_multiplier > 0:
    raise ValueError(f'model.width_multiplier must be positive, got {model_cfg.width_multiplier}.')
  for key in ('stem_temporal_kernel', 'stem_temporal_stride'):
    if int(model_cfg[key]) < 1:
      raise ValueError(f'model.{key} must be a positive integer, got {model_cfg[key]}.')
  if not 0.0 <= model_cfg.bn_momentum < 1.0:
    raise ValueError(f'model.bn_momentum must be in [0, 1), got {model_cfg.bn_momentum}.')
  conv_lib.resolve_conv_impl(model_cfg.conv_impl)  # validates the name
  temporal_downsample = bool(model_cfg.get('temporal_downsample', False))
  if temporal_downsample and model_cfg.depth in BOTTLENECK_DEPTHS:
    raise ValueError(f'model.temporal_downsample is for basic-block depths (10, 18, 34), not '
                     f'depth {model_cfg.depth}.')
  return ResNet3D(
      depth=int(model_cfg.depth),
      width_multiplier=float(model_cfg.width_multiplier),
      stem_temporal_kernel=int(model_cfg.stem_temporal_kernel),
      stem_temporal_stride=int(model_cfg.stem_temporal_stride),
      bn_momentum=float(model_cfg.bn_momentum),
      bn_epsilon=float(model_cfg.bn_epsilon),
      dtype=DTYPES[model_cfg.dtype],
      remat=bool(model_cfg.remat),
      conv_impl=model_cfg.conv_impl,
      stem_max_pool=bool(model_cfg.get('stem_max_pool', True)),
      temporal_downsample=temporal_downsample)
