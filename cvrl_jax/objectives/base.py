"""The objective interface that CVRL and every rho-family method implement.

An objective declares what it needs (clips per video, how they are sampled, how each clip is
augmented, extra state such as a momentum encoder or a queue) and computes its loss. The
trainer, the data pipeline and the augmentation follow these declarations, so adding a method is
one new module plus a config.

State is split three ways, all pytrees of global jax arrays:
  params       trainable: {'backbone': ..., <head names>: ...}; gradients and the optimiser see it.
  batch_stats  BatchNorm running statistics of the online network: {'backbone': ..., ...}.
  aux          everything else the method carries between steps and checkpoints (momentum
               encoder variables, a queue of keys, ...); {} when there is none.
"""
import abc
import dataclasses
from typing import Any, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

PyTree = Any
Metrics = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class ObjectiveSpec:
  """What an objective needs from the data pipeline and the augmentation."""
  num_clips: int
  # 'cvrl_pair': CVRL's decreasing-gap pair (num_clips == 2); 'rho': independent uniform starts.
  sampler: str
  # One augmentation policy name per clip (see cvrl_jax.augment.POLICIES).
  augment_policies: Tuple[str, ...]
  # Host-side random resized crop ranges that go with the policy.
  crop_area_range: Tuple[float, float] = (0.3, 1.0)
  crop_aspect_range: Tuple[float, float] = (0.5, 2.0)

  def __post_init__(self):
    if self.sampler not in ('cvrl_pair', 'rho'):
      raise ValueError(f"sampler must be 'cvrl_pair' or 'rho', got {self.sampler!r}")
    if self.sampler == 'cvrl_pair' and self.num_clips != 2:
      raise ValueError(f"the CVRL pair sampler makes 2 clips, but num_clips={self.num_clips}")
    if len(self.augment_policies) != self.num_clips:
      raise ValueError(f'need one augmentation policy per clip: {self.num_clips} clips, '
                       f'{len(self.augment_policies)} policies {self.augment_policies}')


@dataclasses.dataclass
class LossOutput:
  loss: jax.Array
  batch_stats: PyTree
  aux: PyTree
  metrics: Metrics


class Objective(abc.ABC):
  """Base class: a network (with a `backbone` sub-module) and the loss over its clips."""

  spec: ObjectiveSpec
  network: nn.Module  # has a sub-module named 'backbone'

  def init(self, rng: jax.Array, clips: jax.Array) -> Tuple[PyTree, PyTree, PyTree]:
    """Returns (params, batch_stats, aux) for clips float [B, V, T, H, W, 3]."""
    variables = self.network.init(rng, merge_views(clips), train=True)
    params = variables['params']
    batch_stats = variables.get('batch_stats', {})
    return params, batch_stats, self.init_aux(rng, params, batch_stats, clips)

  def init_aux(self, rng: jax.Array, params: PyTree, batch_stats: PyTree, clips: jax.Array) -> PyTree:
    del rng, params, batch_stats, clips
    return {}

  @abc.abstractmethod
  def loss(self, params: PyTree, batch_stats: PyTree, aux: PyTree, clips: jax.Array,
           rng: jax.Array, step: jax.Array) -> LossOutput:
    """Loss on augmented clips float [B, V, T, H, W, 3] (B is the global batch)."""

  def update_aux(self, params: PyTree, aux: PyTree, step: jax.Array) -> PyTree:
    """Called after each optimiser update with the new params (momentum encoders, ...)."""
    del params, step
    return aux

  def trainable_mask(self, step: jax.Array) -> Optional[PyTree]:
    """A pytree of bools like params (False = gradient zeroed at this step), or None for all."""
    del step
    return None


def merge_views(clips: jax.Array) -> jax.Array:
  """[B, V, T, H, W, C] -> [V*B, T, H, W, C] with all view-0 rows first, then view 1, ..."""
  b, v = clips.shape[:2]
  return jnp.swapaxes(clips, 0, 1).reshape((v * b,) + clips.shape[2:])


def split_views(x: jax.Array, num_views: int) -> Sequence[jax.Array]:
  """Inverse of merge_views along the leading axis: [V*B, ...] -> V arrays [B, ...]."""
  return jnp.split(x, num_views, axis=0)
