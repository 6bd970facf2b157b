"""What the order-based pretext methods share (docs/recipes/pretext.md).

- Label spaces as fixed tables: every order of N elements in lexicographic order (the index is
  the class, as `itertools.permutations(range(N))` enumerates them), the N!/2 classes with each
  order and its reverse merged (OPN), and the 8 geometric transforms (4 rotations x flip).
- Per-example draws on the device from the pretext keys of the inputs mapping
  (objectives/base.py `Inputs`): a class and its permutation, applied to the element axis.
- One order head with a fusion option: 'pairwise' (a shared layer on every pair i < j, then
  concatenated: VCOP, OPN), 'concat' (all elements concatenated: Shuffle & Learn) or
  'sum_of_differences' (sum over j > i of f_j - f_i: Odd-One-Out).
- `PretextObjective`: the backbone on every element as one batch (example-major), the head,
  softmax cross-entropy per task over the videos long enough for the plan ('fits').
"""
import abc
from typing import Dict, Mapping, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cvrl_jax.objectives import base

FUSIONS = ('pairwise', 'concat', 'sum_of_differences')
NUM_TRANSFORMS = 8  # rotation by k * 90 degrees (k = t % 4), then a horizontal flip if t >= 4


# ----------------------------------------------------------------------------------------------
# Label spaces.
# ----------------------------------------------------------------------------------------------
def all_orders(n: int) -> np.ndarray:
  """int32 [n!, n]: every permutation of range(n) in lexicographic order (class = row)."""
  if n < 1:
    raise ValueError(f'an order needs at least 1 element, got {n}')
  rows = [list(range(n))]
  while True:  # the next permutation in lexicographic order (Narayana Pandita)
    p = list(rows[-1])
    i = n - 2
    while i >= 0 and p[i] >= p[i + 1]:
      i -= 1
    if i < 0:
      return np.asarray(rows, np.int32)
    j = n - 1
    while p[j] <= p[i]:
      j -= 1
    p[i], p[j] = p[j], p[i]
    p[i + 1:] = reversed(p[i + 1:])
    rows.append(p)


def orders_up_to_reversal(n: int) -> np.ndarray:
  """int32 [n!/2, n]: one order of each {order, reversed order} pair, the one that comes first
  lexicographically (OPN's 12 classes for n = 4). n >= 2."""
  if n < 2:
    raise ValueError(f'merging reversed orders needs at least 2 elements, got {n}')
  return np.asarray([p for p in all_orders(n) if tuple(p) <= tuple(p[::-1])], np.int32)


def draw_classes(keys: jax.Array, num_classes: int) -> jax.Array:
  """int32 [B]: one class per example, uniform, from its pretext key."""
  return jax.vmap(lambda k: jax.random.randint(k, (), 0, num_classes, jnp.int32))(keys)


def permute_elements(x: jax.Array, perms: jax.Array) -> jax.Array:
  """x [B, N, ...], perms int [B, N] -> y with y[b, i] = x[b, perms[b, i]]."""
  return jax.vmap(lambda xb, pb: jnp.take(xb, pb, axis=0))(x, perms)


def fold(keys: jax.Array, salt: int) -> jax.Array:
  """[B] keys -> [B] keys for one named draw (independent draws from the same pretext keys)."""
  return jax.vmap(lambda k: jax.random.fold_in(k, salt))(keys)


# ----------------------------------------------------------------------------------------------
# Geometric transforms of a whole clip (order + transform): t in [0, 8).
# ----------------------------------------------------------------------------------------------
def transform_clip(clip: jax.Array, t: jax.Array) -> jax.Array:
  """clip [T, S, S, C] (square frames) -> rot90^(t % 4) over (H, W), then W flipped if t >= 4.

  Every frame gets the same transform. Traced as a select over the 8 results (under vmap a
  per-example switch lowers to that anyway).
  """
  if clip.shape[1] != clip.shape[2]:
    raise ValueError(f'rotations need square frames, got {clip.shape[1]} x {clip.shape[2]}')
  results = []
  for flip in (False, True):
    for k in range(4):
      y = jnp.rot90(clip, k, axes=(1, 2))
      results.append(y[:, :, ::-1] if flip else y)
  return jnp.take(jnp.stack(results), t, axis=0)


def inverse_transform(t: int) -> int:
  """The transform that undoes t: a rotation by -k alone, flip then rotation is its own inverse."""
  k, flip = t % 4, t >= 4
  return t if flip else (4 - k) % 4


# ----------------------------------------------------------------------------------------------
# Per-frame appearance ops (OPN): each frame its own draw, so no low-level cue is shared.
# ----------------------------------------------------------------------------------------------
def jitter_crop(frames: jax.Array, key: jax.Array, size: int, max_shift: int) -> jax.Array:
  """frames [T, H, W, C] -> [T, size, size, C]: a size x size window at the centre shifted by an
  integer in [-max_shift, max_shift] per axis (kept inside the frame), one shift per call."""
  h, w = frames.shape[1:3]
  if size + 2 * max_shift > min(h, w):
    raise ValueError(f'a {size}-pixel window shifted by up to {max_shift} pixels needs frames of '
                     f'at least {size + 2 * max_shift} pixels, got {h} x {w}')
  shift = jax.random.randint(key, (2,), -max_shift, max_shift + 1)
  y = (h - size) // 2 + shift[0]
  x = (w - size) // 2 + shift[1]
  return jax.lax.dynamic_slice(frames, (0, y, x, 0), (frames.shape[0], size, size,
                                                      frames.shape[3]))


def split_channel(frames: jax.Array, key: jax.Array) -> jax.Array:
  """frames [T, H, W, 3] -> one random channel of R, G, B copied to all three."""
  c = jax.random.randint(key, (), 0, 3)
  return jnp.repeat(jnp.take(frames, c, axis=-1)[..., None], 3, axis=-1)


# ----------------------------------------------------------------------------------------------
# Heads.
# ----------------------------------------------------------------------------------------------
class OrderHead(nn.Module):
  """Element features [B, N, C] -> {task: logits [B, classes]}.

  element_dim > 0: first a shared Dense(element_dim) (+ BN) + ReLU (+ layer dropout) on every
  element (OPN's fc6, Shuffle & Learn's fc7). fusion 'pairwise': a shared Dense(pair_dim)
  (+ BN) + ReLU (+ layer dropout) on every concatenated pair (f_i, f_j), i < j, the pair outputs
  concatenated (VCOP's and OPN's heads); 'concat': the elements concatenated;
  'sum_of_differences': sum_{j > i} (f_j - f_i). Then dropout (VCOP's 0.5 before the
  classifier) and one Dense per task.
  """
  num_classes: Mapping[str, int]
  fusion: str = 'pairwise'
  element_dim: int = 0
  pair_dim: int = 512
  use_bn: bool = False
  dropout: float = 0.0
  layer_dropout: float = 0.0
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, f: jax.Array, train: bool) -> Dict[str, jax.Array]:
    if self.fusion not in FUSIONS:
      raise ValueError(f'config.objective.fusion must be one of {FUSIONS}, got {self.fusion!r}')
    f = f.astype(jnp.float32)
    n = f.shape[1]

    def layer(x, dim, name):
      x = nn.Dense(dim, name=f'{name}_dense')(x)
      if self.use_bn:
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                         name=f'{name}_bn')(x)
      x = nn.relu(x)
      if self.layer_dropout:
        x = nn.Dropout(self.layer_dropout, deterministic=not train)(x)
      return x

    if self.element_dim:
      f = layer(f, self.element_dim, 'element')
    if self.fusion == 'pairwise':
      pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
      x = jnp.stack([jnp.concatenate([f[:, i], f[:, j]], -1) for i, j in pairs], axis=1)
      x = layer(x, self.pair_dim, 'pair')  # shared over the pairs
      x = x.reshape(x.shape[0], -1)
    elif self.fusion == 'concat':
      x = f.reshape(f.shape[0], -1)
    else:
      x = sum(f[:, j] - f[:, i] for i in range(n) for j in range(i + 1, n))
    if self.dropout:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return {task: nn.Dense(k, name=f'{task}_logits')(x) for task, k in self.num_classes.items()}


class BackboneWithOrderHead(nn.Module):
  """elements [B*N, T, H, W, 3] (example-major) -> (features [B*N, C], {task: logits [B, K]})."""
  backbone: nn.Module
  head: nn.Module
  num_elements: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool):
    features = self.backbone(x, train=train)
    grouped = features.reshape((-1, self.num_elements) + features.shape[1:])
    return features, self.head(grouped, train=train)


def head_from_config(config, num_classes: Mapping[str, int], **defaults) -> OrderHead:
  """An OrderHead with config.objective's fusion / element_dim / pair_dim / head_use_bn /
  dropout / layer_dropout where set, else the method's `defaults`."""
  oc = config.objective
  kwargs = dict(defaults)
  for key, field in (('fusion', 'fusion'), ('element_dim', 'element_dim'),
                     ('pair_dim', 'pair_dim'), ('head_use_bn', 'use_bn'),
                     ('dropout', 'dropout'), ('layer_dropout', 'layer_dropout')):
    if key in oc:
      kwargs[field] = oc[key]
  return OrderHead(num_classes=dict(num_classes), bn_momentum=config.model.bn_momentum, **kwargs)


# ----------------------------------------------------------------------------------------------
# Loss.
# ----------------------------------------------------------------------------------------------
def masked_mean(values: jax.Array, fits: jax.Array) -> jax.Array:
  """Mean of values [B] over the rows where fits [B] is True (0 when there are none)."""
  w = fits.astype(jnp.float32)
  return jnp.sum(values * w) / jnp.maximum(jnp.sum(w), 1.0)


def classification(logits: jax.Array, labels: jax.Array, fits: jax.Array
                   ) -> Tuple[jax.Array, jax.Array]:
  """(mean softmax cross-entropy, accuracy) over the rows that fit."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  ce = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  hits = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return masked_mean(ce, fits), masked_mean(hits, fits)


class PretextObjective(base.Objective):
  """A classification pretext task on elements cut from the clips.

  Subclasses set `self.plan`, `self.network` (a BackboneWithOrderHead), `self.loss_weights`
  ({task: weight}) and implement `task(inputs) -> (elements [B, N, T, H, W, 3], labels {task:
  int32 [B]})`, drawing their labels from inputs['keys']. The loss is sum_task weight *
  CE(task); metrics: '<task>_accuracy' per task, 'pretext_accuracy' (the first task's), and
  'fits' (the share of videos long enough for the plan).
  """

  loss_weights: Mapping[str, float]

  @abc.abstractmethod
  def task(self, inputs: base.Inputs) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """The network's elements and the labels, from the inputs mapping."""

  def _elements(self, clips: jax.Array) -> jax.Array:
    keys = jax.random.split(jax.random.key(0), clips.shape[0])
    elements, _ = self.task({'clips': clips, 'keys': keys})
    return elements

  def init(self, rng: jax.Array, clips: jax.Array):
    elements = self._elements(clips)
    params_rng, dropout_rng = jax.random.split(rng)
    variables = self.network.init({'params': params_rng, 'dropout': dropout_rng},
                                  base.merge_views(elements), train=True)
    params = variables['params']
    batch_stats = variables.get('batch_stats', {})
    return params, batch_stats, self.init_aux(rng, params, batch_stats, clips)

  def logits(self, params, batch_stats, inputs, rng, train: bool):
    """({task: logits [B, K]}, labels, new batch_stats) for the inputs mapping."""
    elements, labels = self.task(inputs)
    kwargs = dict(mutable=['batch_stats'], rngs={'dropout': rng}) if train else {}
    out = self.network.apply({'params': params, 'batch_stats': batch_stats},
                             base.merge_views(elements), train=train, **kwargs)
    if train:
      (_, logits), updates = out
      return logits, labels, updates['batch_stats']
    _, logits = out
    return logits, labels, batch_stats

  def loss(self, params, batch_stats, aux, inputs, rng, step) -> base.LossOutput:
    del step
    logits, labels, new_stats = self.logits(params, batch_stats, inputs, rng, train=True)
    fits = inputs.get('fits', jnp.ones(labels[next(iter(labels))].shape, bool))
    total, metrics = 0.0, {}
    for i, (name, weight) in enumerate(self.loss_weights.items()):
      ce, accuracy = classification(logits[name], labels[name], fits)
      total = total + weight * ce
      metrics[f'{name}_accuracy'] = accuracy
      metrics[f'{name}_loss'] = ce
      if i == 0:
        metrics['pretext_accuracy'] = accuracy
    metrics['fits'] = jnp.mean(fits.astype(jnp.float32))
    return base.LossOutput(loss=total, batch_stats=new_stats, aux=aux, metrics=metrics)
