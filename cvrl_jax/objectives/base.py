"""The objective interface that CVRL and every rho-family method implement.

An objective declares what it needs in a clip plan (`self.plan`, data/plan.py: the temporal
sampler by name and its parameters, the views with their frames, size, augmentation policy and
crop ranges, the per-example host fields it reads) plus extra state such as a momentum encoder or
a queue, and computes its loss from one inputs mapping (`Inputs`). The trainer derives its batch
from the plan, so adding a method is one new module plus a config (docs/objectives.md).

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
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cvrl_jax.data import plan as plan_lib

PyTree = Any
Metrics = Mapping[str, jax.Array]


# The keys of the inputs mapping the trainer passes to Objective.loss (docs/objectives.md):
#   'clips'  float32 [B, V, T, H, W, 3], the augmented views (V, T, H, W from the clip plan);
#   'keys'   [B] PRNG keys, one per example, for pretext draws (permutations, transforms, ...):
#            deterministic per example and epoch like the augmentation, independent of it;
#   'fits'   bool [B], when the plan skips short videos: False rows must not count in the loss;
#   and the plan's host fields (data/plan.py HOST_FIELDS), as global arrays [B, ...].
Inputs = Mapping[str, jax.Array]


@dataclasses.dataclass
class LossOutput:
  loss: jax.Array
  batch_stats: PyTree
  aux: PyTree
  metrics: Metrics


class Objective(abc.ABC):
  """Base class: a network (with a `backbone` sub-module) and the loss over its clips."""

  plan: plan_lib.ClipPlan
  network: nn.Module  # has a sub-module named 'backbone'
  # The run's length, for schedules inside the objective (momentum, frozen prototypes); the
  # trainer sets it with set_training_length() before init and before tracing the step.
  total_steps: Optional[int] = None
  steps_per_epoch: Optional[float] = None

  def set_training_length(self, total_steps: int, steps_per_epoch: float) -> None:
    """Records the number of optimiser updates of the run and how many make one epoch."""
    if total_steps <= 0 or steps_per_epoch <= 0:
      raise ValueError(f'the training length must be positive, got total_steps={total_steps}, '
                       f'steps_per_epoch={steps_per_epoch}')
    self.total_steps = int(total_steps)
    self.steps_per_epoch = float(steps_per_epoch)

  def require_training_length(self) -> Tuple[int, float]:
    """(total_steps, steps_per_epoch), or a clear error when the trainer has not set them."""
    if self.total_steps is None or self.steps_per_epoch is None:
      raise ValueError(f'{type(self).__name__} has schedules over the run: call '
                       'objective.set_training_length(total_steps, steps_per_epoch) first.')
    return self.total_steps, self.steps_per_epoch

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
  def loss(self, params: PyTree, batch_stats: PyTree, aux: PyTree, inputs: Inputs,
           rng: jax.Array, step: jax.Array) -> LossOutput:
    """Loss on one global batch: inputs['clips'] float [B, V, T, H, W, 3] and the other entries
    of `Inputs` (B is the global batch)."""

  def update_aux(self, params: PyTree, aux: PyTree, step: jax.Array) -> PyTree:
    """Called after each optimiser update with the new params (momentum encoders, ...).

    `step` is the 0-based index of the step whose update was just applied; the returned aux is
    what step `step + 1` uses.
    """
    del params, step
    return aux

  def aux_partition_specs(self) -> Mapping[str, PartitionSpec]:
    """Layouts for top-level aux entries that differ from the parameters' (by key; {}: none)."""
    return {}

  def aux_shardings(self, default: PyTree, mesh: Mesh) -> PyTree:
    """The aux layout: `default` (the parameters' rule, one sharding per leaf) with the entries
    of aux_partition_specs() laid out as NamedSharding(mesh, spec) instead."""
    specs = self.aux_partition_specs()
    unknown = set(specs) - set(default)
    if unknown:
      raise ValueError(f'aux_partition_specs names {sorted(unknown)}, which are not in aux '
                       f'{sorted(default)}')
    return {k: jax.tree.map(lambda _, spec=specs[k]: NamedSharding(mesh, spec), v)
            if k in specs else v for k, v in default.items()}

  def trainable_mask(self, step: jax.Array) -> Optional[PyTree]:
    """Bools over params (False = no update at this step), or None when everything trains.

    The mask may be a prefix of params, e.g. {'prototypes': False} or a dict of top-level
    entries; entries it leaves out train. `expand_mask(mask, params)` lays it over params.
    """
    del step
    return None


def expand_mask(mask: Optional[PyTree], params: PyTree) -> Optional[PyTree]:
  """A trainable_mask (None, or a prefix of params with bool leaves) as bools exactly like params.

  Top-level entries of params that a dict mask leaves out are True (trainable).
  """
  if mask is None:
    return None
  if isinstance(mask, Mapping):
    unknown = set(mask) - set(params)
    if unknown:
      raise ValueError(f'trainable_mask names {sorted(unknown)}, which are not in params '
                       f'{sorted(params)}')
    return {k: expand_mask(mask[k], v) if k in mask else jax.tree.map(lambda _: True, v)
            for k, v in params.items()}
  return jax.tree.map(lambda _: mask, params)


def merge_views(clips: jax.Array) -> jax.Array:
  """[B, V, T, H, W, C] -> [B*V, T, H, W, C], example-major: row b*V + v is view v of example b.

  The order keeps each example's views in the rows of the device that holds the example, so a
  batch sharded over devices stays sharded; view-major rows (all view-0 rows first) would make
  XLA gather the whole batch onto every device and run the network replicated.
  """
  b, v = clips.shape[:2]
  return clips.reshape((b * v,) + clips.shape[2:])


def split_views(x: jax.Array, num_views: int) -> Sequence[jax.Array]:
  """Inverse of merge_views along the leading axis: [B*V, ...] -> V arrays [B, ...]."""
  x = x.reshape((x.shape[0] // num_views, num_views) + x.shape[1:])
  return [x[:, v] for v in range(num_views)]
