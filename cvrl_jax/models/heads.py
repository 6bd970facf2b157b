"""Heads on top of the backbone features: a generic MLP, CVRL's projection head, a linear classifier.

Dense layers use the reference's Keras defaults (Glorot-uniform kernels, zero biases) for the MLP,
and the reference classifier's 'random_uniform' (U[-0.05, 0.05]) for the linear classifier.
"""
from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) like tf.math.l2_normalize (which uses rsqrt(max(sum x^2, eps^2))).

  The one normalisation of the project: projections, queues, prototypes, probe inputs, kNN banks.
  """
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def _symmetric_uniform(scale: float) -> nn.initializers.Initializer:
  """U[-scale, scale): Keras' RandomUniform(-scale, scale)."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, minval=-scale, maxval=scale)
  return init


class MLP(nn.Module):
  """[Dense -> (BN) -> ReLU] per hidden dim, then Dense(output_dim) and optionally a last BN.

  CVRL's projection head is `MLP((2048,) * 3, 128, use_bn=True, bn_momentum=0.997)`; the
  rho-family builds its projectors and predictors from the same module. BN momentum follows the
  Keras/Flax convention (0.997 keeps 99.7% of the running value).
  """
  hidden_dims: Sequence[int]
  output_dim: int
  use_bn: bool = True
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  last_bn: bool = False
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.xavier_uniform()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    dense = functools.partial(nn.Dense, use_bias=self.use_bias, dtype=self.dtype,
                              kernel_init=self.kernel_init)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype)
    for i, dim in enumerate(self.hidden_dims):
      x = dense(dim, name=f'dense{i}')(x)
      if self.use_bn:
        x = norm(name=f'bn{i}')(x)
      x = nn.relu(x)
    last = len(self.hidden_dims)
    x = dense(self.output_dim, name=f'dense{last}')(x)
    if self.last_bn:
      x = norm(name=f'bn{last}')(x)
    return x.astype(jnp.float32)


def projection_head(hidden_dim: int = 2048, num_layers: int = 3, output_dim: int = 128,
                    bn_momentum: float = 0.997, bn_epsilon: float = 1e-5, use_bn: bool = True,
                    dtype: Any = jnp.float32) -> MLP:
  """CVRL's head: `num_layers` x [Dense hidden_dim, BN, ReLU], then Dense output_dim (no BN)."""
  if num_layers < 0 or hidden_dim < 1 or output_dim < 1:
    raise ValueError('projection head needs num_layers >= 0 and positive hidden/output dims, got '
                     f'num_layers={num_layers}, hidden_dim={hidden_dim}, output_dim={output_dim}.')
  return MLP(hidden_dims=(hidden_dim,) * num_layers, output_dim=output_dim, use_bn=use_bn,
             bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, dtype=dtype)


class LinearClassifier(nn.Module):
  """Dense(num_classes) logits (float32), optionally on L2-normalised features (CVRL linear eval)."""
  num_classes: int
  l2_normalize: bool = False
  kernel_init: Any = _symmetric_uniform(0.05)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # no train-dependent layers; the argument keeps the heads' common signature
    x = x.astype(jnp.float32)
    if self.l2_normalize:
      x = l2_normalize(x)
    return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name='dense')(x)
