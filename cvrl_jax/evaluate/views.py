"""Multi-view testing: per-view predictions -> one prediction per video, and top-k accuracy.

The recipe's test protocol ("Evaluation") scores 10 temporal x 3 spatial views of every test video
and averages the softmax probabilities over the 30 views before taking top-1 and top-5.
"""
from typing import Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np

INVALID_RANK = np.iinfo(np.int32).max


def average_view_probabilities(logits: jax.Array) -> jax.Array:
  """Logits [B, V, C] of V views per video -> softmax probabilities averaged over views [B, C]."""
  if logits.ndim != 3:
    raise ValueError(f'logits must be [videos, views, classes], got shape {logits.shape}')
  return jnp.mean(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), axis=1)


VIEW_AVERAGES = ('softmax', 'logits')


def average_view_scores(logits: jax.Array, how: str = 'softmax') -> jax.Array:
  """Logits [B, V, C] -> one score per class [B, C]: the views' softmax probabilities averaged
  ('softmax', the CVRL recipe) or their logits averaged ('logits', VCOP's fine-tuning test)."""
  if how not in VIEW_AVERAGES:
    raise ValueError(f'config.eval.view_average must be one of {VIEW_AVERAGES}, got {how!r}')
  if how == 'softmax':
    return average_view_probabilities(logits)
  if logits.ndim != 3:
    raise ValueError(f'logits must be [videos, views, classes], got shape {logits.shape}')
  return jnp.mean(logits.astype(jnp.float32), axis=1)


def label_rank(scores: jax.Array, labels: jax.Array) -> jax.Array:
  """Rank of the true class among the scores: [B, C], [B] -> int32 [B] (0 = best).

  A prediction is top-k correct when its rank is < k. Ties are broken against the label (every
  other class with an equal score ranks above it), so a degenerate scorer, e.g. features that are
  all identical, cannot gain accuracy from tie-breaking. A label outside [0, C) (the pipelines
  reject those with a sentence naming the record, cvrl_jax/data/records.py) gets the rank
  INVALID_RANK (int32 max): it is never counted as correct, whatever k and the scores.
  """
  num_classes = scores.shape[1]
  labels = labels.astype(jnp.int32)
  valid = (labels >= 0) & (labels < num_classes)
  true_score = jnp.take_along_axis(scores, jnp.where(valid, labels, 0)[:, None], axis=1)
  rank = jnp.sum(scores >= true_score, axis=1, dtype=jnp.int32) - 1
  return jnp.where(valid, rank, INVALID_RANK)


def topk_correct(scores: jax.Array, labels: jax.Array, ks: Sequence[int] = (1, 5)
                 ) -> Dict[int, jax.Array]:
  """{k: bool [B]}: whether the label is among the k highest of scores [B, C]."""
  rank = label_rank(scores, labels)
  return {k: rank < k for k in ks}
