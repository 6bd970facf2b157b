"""3D convolution with two interchangeable formulations.

R3D's convolutions have kernels (kt, 1, 1), (1, 3, 3), (1, 1, 1) (bottleneck blocks), (3, 3, 3)
(basic blocks) and (kt, 7, 7) (stem). Besides the plain 3D convolution, every one of them can be
written as

  temporal taps folded into channels  ->  a 2D convolution over merged batch*time (spatial kernel
                                          larger than 1x1) or one matrix product (1x1 spatial),

which is exact: the `kt` temporal taps of a SAME-padded, strided input are concatenated along the
channel axis, and the kernel (kt, kh, kw, C, O) is read as (kh, kw, kt*C, O). Both formulations use
the same parameter (a `kernel` of shape (kt, kh, kw, C, O), the layout of `flax.linen.Conv`), so a
checkpoint works with either. Which one XLA compiles faster depends on the platform;
`resolve_conv_impl('auto')` picks the measured winner (figures in BENCHMARKS.md).

On CPU the formulation pays off together with one XLA flag, `CPU_XLA_FLAGS`, which
`apply_cpu_xla_flags()` adds to `XLA_FLAGS` (the entry points call it: `cvrl_jax.startup`).
"""
from collections.abc import MutableMapping, Sequence
import os
from typing import Any

import flax.linen as nn
from flax.linen import dtypes
import jax
from jax import lax
import jax.numpy as jnp
import jaxlib

CONV_IMPLS = ('auto', 'conv3d', 'factorized')

# Measured (BENCHMARKS.md): on the development CPU (bench/train_step_vs_torch.py) the factorized
# step is 2.4-3.3x faster; on an NVIDIA H200 (bench/accelerator.sh, R3D-50 16 x 224^2 bfloat16,
# largest batch) it trains 1.40x more clips/s than cuDNN's 3D convolutions. TPU keeps the plain
# formulation (its convolution unit runs 3D kernels natively) until a measurement there says
# otherwise.
_AUTO_IMPL = {'cpu': 'factorized', 'gpu': 'factorized'}
_DEFAULT_AUTO_IMPL = 'conv3d'

# XLA:CPU sends matrix products and reductions to YNNPACK and, by default, convolutions too; its
# weight-gradient convolutions are about 3x slower there than XLA's own (Eigen) kernels. Keeping
# YNNPACK for dots and reductions only made the factorized R3D-50 and R3D-18 train steps 1.4x and
# 1.7x faster (BENCHMARKS.md).
# The flag only routes work between kernel libraries: results agree to float rounding. It exists
# in the jaxlib releases listed here (an unknown flag would stop XLA from starting).
CPU_XLA_FLAGS = {'xla_cpu_experimental_ynn_fusion_type': 'dot,reduce'}
_CPU_XLA_FLAGS_JAXLIB = ('0.10.',)
NO_XLA_FLAGS_ENV = 'CVRL_JAX_NO_XLA_FLAGS'

# Keras' 'VarianceScaling' default (scale 1, fan-in, truncated normal): the reference's conv init.
default_kernel_init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal')


def resolve_conv_impl(conv_impl: str, backend: str | None = None) -> str:
  """Maps 'auto' to the formulation measured fastest on `backend` (default: JAX's backend)."""
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f'model.conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}.')
  if conv_impl != 'auto':
    return conv_impl
  backend = backend or jax.default_backend()
  return _AUTO_IMPL.get(backend, _DEFAULT_AUTO_IMPL)


def apply_cpu_xla_flags(environ: MutableMapping[str, str] = os.environ) -> bool:
  """Adds `CPU_XLA_FLAGS` to XLA_FLAGS; True if anything was added.

  XLA reads XLA_FLAGS when JAX starts its first backend, so this has an effect only before the
  first JAX computation (`cvrl_jax.startup.configure_process` calls it). Flags already in XLA_FLAGS win;
  setting the environment variable CVRL_JAX_NO_XLA_FLAGS=1 turns this off.
  """
  if environ.get(NO_XLA_FLAGS_ENV, '') not in ('', '0'):
    return False
  if not jaxlib.__version__.startswith(_CPU_XLA_FLAGS_JAXLIB):
    return False
  current = environ.get('XLA_FLAGS', '')
  added = [f'--{name}={value}' for name, value in CPU_XLA_FLAGS.items()
           if f'--{name}=' not in current]
  if added:
    environ['XLA_FLAGS'] = ' '.join([current] + added).strip()
  return bool(added)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """(low, high) padding of XLA/TensorFlow 'SAME' for one dimension."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def conv3d(x: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
  """Plain SAME-padded 3D convolution, x [N, T, H, W, C], kernel [kt, kh, kw, C, O]."""
  return lax.conv_general_dilated(
      x, kernel, tuple(strides), 'SAME', dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'))


def _fold_temporal_taps(x: jax.Array, kt: int, st: int) -> jax.Array:
  """[N, T, H, W, C] -> [N, T_out, H, W, kt*C]: tap k of output frame t is input frame t*st+k-pad."""
  if kt == 1:  # SAME adds no padding for a kernel of 1
    return x[:, ::st] if st > 1 else x
  t = x.shape[1]
  t_out = -(-t // st)
  x = jnp.pad(x, ((0, 0), same_padding(t, kt, st), (0, 0), (0, 0), (0, 0)))
  taps = [lax.slice_in_dim(x, k, k + (t_out - 1) * st + 1, st, axis=1) for k in range(kt)]
  return jnp.concatenate(taps, axis=-1)


def factorized_conv3d(x: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
  """The same convolution as `conv3d`, as a matrix product or a 2D convolution (see module doc)."""
  kt, kh, kw, c, o = kernel.shape
  st, sh, sw = strides
  x = _fold_temporal_taps(x, kt, st)
  # (kt, kh, kw, C, O) -> (kh, kw, kt*C, O), matching the tap-major channel order of the fold.
  kernel = jnp.moveaxis(kernel, 0, 2).reshape(kh, kw, kt * c, o)
  if kh == 1 and kw == 1:
    x = x[:, :, ::sh, ::sw] if sh > 1 or sw > 1 else x
    return lax.dot_general(x, kernel[0, 0], (((4,), (0,)), ((), ())))
  n, t = x.shape[:2]
  y = lax.conv_general_dilated(
      x.reshape((n * t,) + x.shape[2:]), kernel, (sh, sw), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return y.reshape((n, t) + y.shape[1:])


class Conv3D(nn.Module):
  """Bias-free SAME 3D convolution; `impl` chooses the formulation, not the parameters."""
  features: int
  kernel_size: tuple[int, int, int]
  strides: tuple[int, int, int] = (1, 1, 1)
  impl: str = 'conv3d'
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Any = default_kernel_init

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 5:
      raise ValueError(f'Conv3D expects input [N, T, H, W, C], got shape {x.shape}.')
    kernel = self.param('kernel', self.kernel_init,
                        tuple(self.kernel_size) + (x.shape[-1], self.features), self.param_dtype)
    x, kernel = dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    impl = resolve_conv_impl(self.impl)
    conv = factorized_conv3d if impl == 'factorized' else conv3d
    return conv(x, kernel, self.strides)
