"""Contrastive losses on global arrays.

Written on the whole global batch: under `jax.jit` with the batch sharded over a mesh, the
similarity matrices below span every replica's clips, so all of them are negatives (XLA inserts
the all-gather of the small embedding matrices; no per-replica code).
"""
from typing import Dict, Tuple

import jax
import jax.numpy as jnp

# The reference masks self-similarity by subtracting this constant (not -inf, so a row that is
# entirely masked still has a finite softmax).
LARGE_NUM = 1e9


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) like tf.math.l2_normalize (which uses rsqrt(max(sum x^2, eps^2)))."""
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def _cross_entropy_rows(logits: jax.Array, positive_index: jax.Array) -> jax.Array:
  """Mean over rows of -log softmax(logits)[row, positive_index[row]]."""
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.take_along_axis(log_probs, positive_index[:, None], axis=-1))


def _mean_entropy(logits: jax.Array) -> jax.Array:
  probs = jax.nn.softmax(logits, axis=-1)
  return -jnp.mean(jnp.sum(probs * jnp.log(probs + 1e-8), axis=-1))


def cvrl_contrastive_loss(z1: jax.Array, z2: jax.Array, temperature: float = 0.1
                          ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """CVRL's InfoNCE (NT-Xent) over the global batch, as ../shared/spec/cvrl.md "Loss" writes it.

  Args:
    z1: [N, D] embeddings of view 1 (row i and row i of z2 come from the same video).
    z2: [N, D] embeddings of view 2.
    temperature: tau.

  Returns:
    loss = loss_a + loss_b (summed, not averaged, as in the reference), and metrics:
    contrastive_accuracy (argmax of logits_ab hits the positive) and contrastive_entropy (of
    softmax(logits_ab)), both as the reference logs them.
  """
  if z1.shape != z2.shape or z1.ndim != 2:
    raise ValueError(f'z1 and z2 must be [N, D] of one shape, got {z1.shape} and {z2.shape}')
  n = z1.shape[0]
  h1 = l2_normalize(z1.astype(jnp.float32))
  h2 = l2_normalize(z2.astype(jnp.float32))
  self_mask = jnp.eye(n, dtype=jnp.float32) * LARGE_NUM
  logits_aa = h1 @ h1.T / temperature - self_mask
  logits_bb = h2 @ h2.T / temperature - self_mask
  logits_ab = h1 @ h2.T / temperature
  logits_ba = h2 @ h1.T / temperature
  positives = jnp.arange(n)
  loss_a = _cross_entropy_rows(jnp.concatenate([logits_ab, logits_aa], axis=1), positives)
  loss_b = _cross_entropy_rows(jnp.concatenate([logits_ba, logits_bb], axis=1), positives)
  accuracy = jnp.mean((jnp.argmax(logits_ab, axis=1) == positives).astype(jnp.float32))
  metrics = {
      'contrastive_accuracy': accuracy,
      'contrastive_entropy': _mean_entropy(logits_ab),
  }
  return loss_a + loss_b, metrics
