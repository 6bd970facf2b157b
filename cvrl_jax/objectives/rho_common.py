"""What the rho-family objectives share (docs/recipes/rho_family.md).

- The clips: rho clips per video from the rho sampler, each augmented with "aug+".
- Projection MLPs in the reference's shape: `head_num_layers` hidden layers (Dense -> BN ->
  ReLU, or Dense -> ReLU without BN), then a Dense output; the reference counts the output layer
  too ("3 layers, hidden 2048, out 128" is head_num_layers=2 here, the same key CVRL uses).
- The momentum target network (rho-MoCo, rho-BYOL): its parameters follow the online ones by an
  EMA with the cosine momentum schedule; its BatchNorm statistics are its own, updated by its
  forward passes in training mode as the reference's key encoder does. Both live in `aux`, so
  they are checkpointed with the rest of the state.
"""
from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from cvrl_jax import augment
from cvrl_jax.data import plan as plan_lib
from cvrl_jax.models import heads
from cvrl_jax.objectives import base
from cvrl_jax.objectives import momentum

PyTree = Any
AUGMENT_POLICY = 'aug_plus'


def rho_plan(rho: int) -> plan_lib.ClipPlan:
  """rho clips per video, independent uniform starts, every clip augmented with aug+.

  rho = 1 is the paper's ablation without temporal persistence: two aug+ views of one clip.
  """
  if rho < 1:
    raise ValueError(f'config.objective.rho must be at least 1 (clips per video), got {rho}')
  policy = augment.get_policy(AUGMENT_POLICY)
  view = plan_lib.ViewSpec(AUGMENT_POLICY, crop_area_range=policy.crop_area_range,
                           crop_aspect_range=policy.crop_aspect_range)
  return plan_lib.ClipPlan(sampler='rho' if rho > 1 else 'same_start',
                           views=(view,) * max(rho, 2))


def mlp(hidden_dim: int, num_hidden_layers: int, output_dim: int, use_bn: bool,
        bn_momentum: float, bn_epsilon: float) -> nn.Module:
  """A projector or predictor: num_hidden_layers x [Dense(hidden_dim) (-> BN) -> ReLU] -> Dense."""
  return heads.MLP(hidden_dims=(hidden_dim,) * num_hidden_layers, output_dim=output_dim,
                   use_bn=use_bn, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)


def projector(config: ml_collections.ConfigDict) -> nn.Module:
  oc = config.objective
  return mlp(oc.head_hidden_dim, oc.head_num_layers, oc.head_output_dim, oc.head_use_bn,
             oc.head_bn_momentum, config.model.bn_epsilon)


def stack_views(x: jax.Array, num_views: int) -> jax.Array:
  """[B*V, ...] in merge_views order -> [V, B, ...]."""
  return jnp.swapaxes(x.reshape((x.shape[0] // num_views, num_views) + x.shape[1:]), 0, 1)


class MomentumTarget:
  """The momentum (EMA) copy of part of an online network, applied in training mode.

  Args:
    network: the target module; its top-level parameter names are a subset of the online
      network's (e.g. BackboneWithProjector inside BYOL's BackboneProjectorPredictor).
    param_keys: those top-level names.
    base_momentum: m0 of the cosine schedule.
  """

  def __init__(self, network: nn.Module, param_keys: Sequence[str], base_momentum: float):
    if not 0.0 <= base_momentum <= 1.0:
      raise ValueError(f'config.objective.base_momentum must be in [0, 1], got {base_momentum}')
    self.network = network
    self.param_keys = tuple(param_keys)
    self.base_momentum = float(base_momentum)

  def _subset(self, tree: PyTree) -> Dict[str, PyTree]:
    return {k: tree[k] for k in self.param_keys if k in tree}

  def init(self, params: PyTree, batch_stats: PyTree) -> Dict[str, PyTree]:
    """The target starts as a copy of the online network (the reference copies at iteration 0)."""
    return {'params': momentum.copy_tree(self._subset(params)),
            'batch_stats': momentum.copy_tree(self._subset(batch_stats))}

  def apply(self, target: Dict[str, PyTree], clips: jax.Array) -> Tuple[Any, Dict[str, PyTree]]:
    """Forward pass without gradients; returns (network outputs, target with new BN statistics)."""
    target = jax.lax.stop_gradient(target)
    outputs, updates = self.network.apply(
        {'params': target['params'], 'batch_stats': target['batch_stats']}, clips, train=True,
        mutable=['batch_stats'])
    outputs = jax.lax.stop_gradient(outputs)
    return outputs, {'params': target['params'], 'batch_stats': updates['batch_stats']}

  def momentum_at(self, step: jax.Array, total_steps: int) -> jax.Array:
    """m(step) of the cosine schedule."""
    return momentum.cosine_momentum(step, total_steps, self.base_momentum)

  def update(self, target: Dict[str, PyTree], params: PyTree, step: jax.Array,
             total_steps: int) -> Dict[str, PyTree]:
    """target <- m(step) target + (1 - m(step)) online, for the parameters (not BN statistics)."""
    m = self.momentum_at(step, total_steps)
    return {'params': momentum.ema_update(target['params'], self._subset(params), m),
            'batch_stats': target['batch_stats']}
