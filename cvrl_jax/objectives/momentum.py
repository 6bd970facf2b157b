"""Momentum (EMA) encoders: the cosine momentum schedule and the parameter update.

The rho-family's momentum encoder follows the online encoder with
  target <- m * target + (1 - m) * online,
  m(k) = 1 - (1 - m0) * (cos(pi * k / K) + 1) / 2,
so m rises from m0 at step 0 to 1 at the last step K (docs/recipes/rho_family.md).
"""
import math
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def cosine_momentum(step: jax.Array, total_steps: int, base_momentum: float) -> jax.Array:
  """m(step) as float32; steps past total_steps keep m = 1."""
  if total_steps <= 0:
    raise ValueError(f'total_steps must be positive, got {total_steps}')
  progress = jnp.minimum(jnp.asarray(step, jnp.float32) / total_steps, 1.0)
  return 1.0 - (1.0 - base_momentum) * (jnp.cos(math.pi * progress) + 1.0) / 2.0


def ema_update(target: PyTree, online: PyTree, momentum: jax.Array) -> PyTree:
  """m * target + (1 - m) * online, leaf by leaf (structures must match)."""
  return jax.tree.map(lambda t, o: momentum * t + (1.0 - momentum) * o.astype(t.dtype),
                      target, online)


def copy_tree(tree: PyTree) -> PyTree:
  """A fresh copy of every leaf, so the target starts equal to (and independent of) the online."""
  return jax.tree.map(jnp.copy, tree)
