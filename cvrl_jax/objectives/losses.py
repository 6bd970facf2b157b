"""Contrastive losses on global arrays.

Written on the whole global batch: under `jax.jit` with the batch sharded over a mesh, the
similarity matrices below span every replica's clips, so all of them are negatives (XLA inserts
the all-gather of the small embedding matrices; no per-replica code).
"""
from typing import Dict, Tuple

import jax
import jax.numpy as jnp

from cvrl_jax.models.heads import l2_normalize

# The reference masks self-similarity by subtracting this constant (not -inf, so a row that is
# entirely masked still has a finite softmax).
LARGE_NUM = 1e9


def _cross_entropy_rows(logits: jax.Array, positive_index: jax.Array) -> jax.Array:
  """Mean over rows of -log softmax(logits)[row, positive_index[row]]."""
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.take_along_axis(log_probs, positive_index[:, None], axis=-1))


def _mean_entropy(logits: jax.Array) -> jax.Array:
  probs = jax.nn.softmax(logits, axis=-1)
  return -jnp.mean(jnp.sum(probs * jnp.log(probs + 1e-8), axis=-1))


def cvrl_contrastive_loss(z1: jax.Array, z2: jax.Array, temperature: float = 0.1
                          ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """CVRL's InfoNCE (NT-Xent) over the global batch, as docs/recipes/cvrl.md "Loss" writes it.

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


# ----------------------------------------------------------------------------------------------
# The rho-family (docs/recipes/rho_family.md). Embeddings arrive stacked per clip, [V, N, D]:
# V = rho clips of each of N videos (the global batch). Every loss sums over queries (or clip
# pairs) what the reference accumulates with one backward pass per query, so a step's gradient
# has the reference's scale.
# ----------------------------------------------------------------------------------------------
PAIRINGS = ('adjacent', 'all')


def clip_pairs(num_clips: int, pairing: str) -> Tuple[Tuple[int, int], ...]:
  """Pairs of clip indices: 'adjacent' (k, k+1) as the reference, or 'all' i < j."""
  if num_clips < 2:
    raise ValueError(f'pairing clips needs at least 2 clips, got {num_clips}')
  if pairing == 'adjacent':
    return tuple((k, k + 1) for k in range(num_clips - 1))
  if pairing == 'all':
    return tuple((i, j) for i in range(num_clips) for j in range(i + 1, num_clips))
  raise ValueError(f'pairing must be one of {PAIRINGS}, got {pairing!r}')


def _check_clip_stack(name: str, x: jax.Array) -> None:
  if x.ndim != 3 or x.shape[0] < 2:
    raise ValueError(f'{name} must be [V, N, D] with V >= 2 clips, got shape {x.shape}')


def rho_simclr_loss(z: jax.Array, temperature: float = 0.1, pairing: str = 'adjacent'
                    ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """SimCLR's NT-Xent summed over clip pairs.

  For a pair (i, j) the 2N embeddings of clips i and j are each a query once; a query's positive
  is the other clip of its video and its negatives are the other 2N - 2 embeddings (the global
  batch). The pair loss is the mean over the 2N queries, i.e. half of `cvrl_contrastive_loss`.
  """
  _check_clip_stack('z', z)
  pair_losses, accuracies = [], []
  for i, j in clip_pairs(z.shape[0], pairing):
    loss_ij, metrics = cvrl_contrastive_loss(z[i], z[j], temperature)
    pair_losses.append(0.5 * loss_ij)
    accuracies.append(metrics['contrastive_accuracy'])
  return sum(pair_losses), {'contrastive_accuracy': jnp.mean(jnp.stack(accuracies))}


def rho_moco_loss(queries: jax.Array, keys: jax.Array, queue: jax.Array, temperature: float = 0.1
                  ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """MoCo's InfoNCE with rho clips: every clip is a query once, every other clip a positive key.

  Args:
    queries: [V, N, D] online projections.
    keys: [V, N, D] momentum-encoder projections (gradients are stopped here).
    queue: [K, D] L2-normalised keys of earlier steps, the negatives.
    temperature: tau.

  Returns:
    sum over query clips i of the mean over key clips j != i and videos n of
    -log softmax([q_in . k_jn, q_in . queue] / tau)[0], and metrics: moco_accuracy (the positive
    beats every queue entry).
  """
  _check_clip_stack('queries', queries)
  if keys.shape != queries.shape:
    raise ValueError(f'keys must match queries {queries.shape}, got {keys.shape}')
  num_clips = queries.shape[0]
  q = l2_normalize(queries.astype(jnp.float32))
  k = jax.lax.stop_gradient(l2_normalize(keys.astype(jnp.float32)))
  negatives = jnp.einsum('vnd,kd->vnk', q, jax.lax.stop_gradient(queue.astype(jnp.float32)))
  negatives = negatives / temperature
  # positives[i, j, n] = q_in . k_jn / tau
  positives = jnp.einsum('ind,jnd->ijn', q, k) / temperature
  negative_lse = jax.nn.logsumexp(negatives, axis=-1)  # [V, N]
  # -log(e^pos / (e^pos + sum e^neg)) = logaddexp(pos, lse_neg) - pos
  row_losses = jnp.logaddexp(positives, negative_lse[:, None, :]) - positives  # [V, V, N]
  off_diagonal = 1.0 - jnp.eye(num_clips, dtype=jnp.float32)
  per_query = jnp.sum(jnp.mean(row_losses, axis=-1) * off_diagonal, axis=1) / (num_clips - 1)
  hits = positives > jnp.max(negatives, axis=-1)[:, None, :]
  accuracy = jnp.sum(jnp.mean(hits, axis=-1) * off_diagonal) / (num_clips * (num_clips - 1))
  return jnp.sum(per_query), {'moco_accuracy': accuracy}


def rho_byol_loss(predictions: jax.Array, targets: jax.Array, temperature: float = 0.5
                  ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """BYOL's regression over rho clips: -cos(p_i, z_j) / tau for query clip i and target clip j != i.

  With tau = 0.5 this is -2 cos, which differs from BYOL's ||p - z||^2 = 2 - 2 cos (unit vectors)
  only by a constant: same gradients.

  Returns:
    sum over query clips i of the mean over j != i and videos of -cos(p_in, z_jn) / tau, and
    metrics: byol_cosine (the mean cosine over those pairs).
  """
  _check_clip_stack('predictions', predictions)
  if targets.shape != predictions.shape:
    raise ValueError(f'targets must match predictions {predictions.shape}, got {targets.shape}')
  num_clips = predictions.shape[0]
  p = l2_normalize(predictions.astype(jnp.float32))
  z = jax.lax.stop_gradient(l2_normalize(targets.astype(jnp.float32)))
  cosines = jnp.mean(jnp.einsum('ind,jnd->ijn', p, z), axis=-1)  # [V, V]
  off_diagonal = 1.0 - jnp.eye(num_clips, dtype=jnp.float32)
  mean_cosine = jnp.sum(cosines * off_diagonal) / (num_clips * (num_clips - 1))
  loss = -jnp.sum(cosines * off_diagonal) / ((num_clips - 1) * temperature)
  return loss, {'byol_cosine': mean_cosine}


def sinkhorn_knopp(scores: jax.Array, epsilon: float = 0.05, num_iters: int = 3) -> jax.Array:
  """SwAV's equipartitioned soft assignments ("codes") of N samples to K prototypes.

  Q = exp(scores / epsilon), scaled to sum to 1, then `num_iters` times: each prototype's total
  mass (sum over samples) set to 1/K, then each sample's mass set to 1/N. Finally every sample's
  row is renormalised to sum to 1 (a distribution over prototypes). N is the global batch: on a
  sharded array the sums span every replica.

  Args:
    scores: [N, K] similarities of L2-normalised embeddings to normalised prototypes.

  Returns:
    [N, K] float32 codes without gradient, rows summing to 1.
  """
  if scores.ndim != 2:
    raise ValueError(f'scores must be [N, K], got shape {scores.shape}')
  scores = jax.lax.stop_gradient(scores.astype(jnp.float32))
  num_samples, num_prototypes = scores.shape
  # The global max cancels in the first normalisation; it keeps exp() finite.
  q = jnp.exp((scores - jnp.max(scores)) / epsilon)
  q = q / jnp.sum(q)
  for _ in range(num_iters):
    q = q / (jnp.sum(q, axis=0, keepdims=True) * num_prototypes)
    q = q / (jnp.sum(q, axis=1, keepdims=True) * num_samples)
  return q / jnp.sum(q, axis=1, keepdims=True)


def swav_loss(scores: jax.Array, temperature: float = 0.1, pairing: str = 'adjacent',
              epsilon: float = 0.05, num_iters: int = 3) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """SwAV's swapped prediction summed over clip pairs.

  Each clip's codes come from Sinkhorn-Knopp over the global batch. For a pair (i, j) the loss is
  the mean of CE(codes_i, softmax(scores_j / tau)) and CE(codes_j, softmax(scores_i / tau)),
  averaged over videos.

  Args:
    scores: [V, N, K] normalised embeddings times normalised prototypes.

  Returns:
    the loss and metrics: swav_prototypes_used (fraction of prototypes that are some sample's
    most likely code, a collapse indicator).
  """
  _check_clip_stack('scores', scores)
  scores = scores.astype(jnp.float32)
  codes = jnp.stack([sinkhorn_knopp(s, epsilon, num_iters) for s in scores])
  log_probs = jax.nn.log_softmax(scores / temperature, axis=-1)
  cross_entropy = lambda q, logp: -jnp.mean(jnp.sum(q * logp, axis=-1))
  loss = sum(0.5 * (cross_entropy(codes[i], log_probs[j]) + cross_entropy(codes[j], log_probs[i]))
             for i, j in clip_pairs(scores.shape[0], pairing))
  assigned = jnp.zeros(scores.shape[-1]).at[jnp.argmax(codes, axis=-1).reshape(-1)].set(1.0)
  used = jnp.mean(assigned)
  return loss, {'swav_prototypes_used': used}


def moco_loss_with_negatives(queries: jax.Array, keys: jax.Array, queue: jax.Array,
                             extra_negatives: jax.Array, temperature: float = 0.07
                             ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """MoCo's InfoNCE with per-example negatives beside the queue (VTDL's temporal negatives).

  Args:
    queries: [N, D] online projections.
    keys: [N, D] momentum-encoder projections of the positives (gradients stopped).
    queue: [K, D] L2-normalised keys of earlier steps (gradients stopped).
    extra_negatives: [N, E, D] row n's own negatives, online projections WITH gradient.
    temperature: tau.

  Returns:
    the mean over n of -log softmax([q.k, q.queue, q.extra] / tau)[0] (all vectors normalised),
    and metrics: moco_accuracy (the positive beats every other logit) and
    temporal_negative_accuracy (the positive beats the row's own negatives).
  """
  if queries.ndim != 2 or keys.shape != queries.shape:
    raise ValueError(f'queries and keys must be [N, D] of one shape, got {queries.shape} and '
                     f'{keys.shape}')
  if extra_negatives.ndim != 3 or extra_negatives.shape[::2] != queries.shape:
    raise ValueError(f'extra_negatives must be [N, E, D] for queries {queries.shape}, got '
                     f'{extra_negatives.shape}')
  q = l2_normalize(queries.astype(jnp.float32))
  k = jax.lax.stop_gradient(l2_normalize(keys.astype(jnp.float32)))
  extra = l2_normalize(extra_negatives.astype(jnp.float32))
  positive = jnp.sum(q * k, axis=-1, keepdims=True) / temperature
  from_queue = q @ jax.lax.stop_gradient(queue.astype(jnp.float32)).T / temperature
  own = jnp.einsum('nd,ned->ne', q, extra) / temperature
  logits = jnp.concatenate([positive, from_queue, own], axis=1)
  loss = jnp.mean(jax.nn.logsumexp(logits, axis=1) - positive[:, 0])
  metrics = {
      'moco_accuracy': jnp.mean((positive[:, 0] > jnp.max(logits[:, 1:], axis=1))
                                .astype(jnp.float32)),
      'temporal_negative_accuracy': jnp.mean((positive[:, 0] > jnp.max(own, axis=1))
                                             .astype(jnp.float32)),
  }
  return loss, metrics


def multi_positive_moco_loss(queries: jax.Array, keys: jax.Array, queue: jax.Array,
                             temperature: float = 0.07
                             ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """InfoNCE with several positives per row in one softmax (CEP's appearance loss).

  Row n has P queries q_n1..q_nP (CEP: the past, current and future segments) and one key k_n.
  Its logits are the P positives q_np.k_n and, for every query, its similarities to the queue,
  all in one softmax over P + P K entries (as the authors' code concatenates them):
    logits_n = [q_n1.k_n, ..., q_nP.k_n, q_n1.queue, ..., q_nP.queue] / tau,
    loss_n = sum_p -log softmax(logits_n)[p],
  and the loss is the mean of loss_n over rows (all vectors L2-normalised).

  Args:
    queries: [N, P, D] online embeddings.
    keys: [N, D] momentum-encoder embeddings of the positives (gradients stopped).
    queue: [K, D] L2-normalised keys of earlier steps (gradients stopped).
    temperature: tau.

  Returns:
    the loss, and metrics: moco_accuracy (over rows and queries, the positive beats every queue
    entry of that query).
  """
  if queries.ndim != 3 or keys.ndim != 2 or (queries.shape[0], queries.shape[2]) != keys.shape:
    raise ValueError(f'queries must be [N, P, D] and keys [N, D] of the same N and D, got '
                     f'{queries.shape} and {keys.shape}')
  if queue.ndim != 2 or queue.shape[1] != keys.shape[1]:
    raise ValueError(f'queue must be [K, {keys.shape[1]}], got {queue.shape}')
  q = l2_normalize(queries.astype(jnp.float32))
  k = jax.lax.stop_gradient(l2_normalize(keys.astype(jnp.float32)))
  positives = jnp.einsum('npd,nd->np', q, k) / temperature
  negatives = jnp.einsum('npd,kd->npk', q, jax.lax.stop_gradient(queue.astype(jnp.float32)))
  negatives = negatives / temperature
  log_partition = jax.nn.logsumexp(jnp.concatenate(
      [positives, negatives.reshape(negatives.shape[0], -1)], axis=1), axis=1)
  loss = jnp.mean(jnp.sum(log_partition[:, None] - positives, axis=1))
  accuracy = jnp.mean((positives > jnp.max(negatives, axis=-1)).astype(jnp.float32))
  return loss, {'moco_accuracy': accuracy}


def negative_cosine_loss(predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """BYOL's regression per row, 2 - 2 cos(p, t) = ||p/|p| - t/|t|||^2, as [N] (no stop-gradient:
  the caller stops the targets' gradient where the method does)."""
  if predictions.shape != targets.shape:
    raise ValueError(f'predictions and targets must have one shape, got {predictions.shape} and '
                     f'{targets.shape}')
  p = l2_normalize(predictions.astype(jnp.float32))
  t = l2_normalize(targets.astype(jnp.float32))
  return 2.0 - 2.0 * jnp.sum(p * t, axis=-1)
