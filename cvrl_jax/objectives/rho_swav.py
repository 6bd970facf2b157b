"""rho-SwAV: swapped prediction of Sinkhorn-Knopp codes between clips of one video."""
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import ml_collections

from cvrl_jax import models
from cvrl_jax.objectives import base
from cvrl_jax.objectives import losses
from cvrl_jax.objectives import networks
from cvrl_jax.objectives import rho_common


class RhoSwAV(base.Objective):
  """Backbone -> projector (BN) -> L2-normalised embedding -> scores against normalised prototypes.

  Codes come from Sinkhorn-Knopp over the global batch (a global array: its sums span every
  replica). The prototypes get no update during the first `freeze_prototypes_epochs` epochs.
  They are normalised in the forward pass (networks.Prototypes), as in one of the reference's two
  code paths; the other renormalises the stored weights before each step. The loss sees the same
  unit prototypes either way; the gradients differ by the 1/||w|| scale (about 1: the columns start
  at unit norm on average) and the projection onto the sphere's tangent space.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    oc = config.objective
    self.rho = int(oc.rho)
    self.plan = rho_common.rho_plan(self.rho)
    self.num_views = self.plan.num_views  # rho; two views of one clip at rho = 1
    self.temperature = float(oc.temperature)
    self.pairing = oc.pairing
    self.epsilon = float(oc.sinkhorn_epsilon)
    self.sinkhorn_iters = int(oc.sinkhorn_iters)
    self.freeze_prototypes_epochs = float(oc.freeze_prototypes_epochs)
    losses.clip_pairs(self.num_views, self.pairing)  # validates rho and pairing
    if oc.num_prototypes <= oc.head_output_dim + 1:
      # Fewer prototypes than that leave directions where every prototype scores the same (for
      # K <= D, the complement of their span): uniform predictions, a loss of log K that is a
      # stationary point, and no learning (seen on the demo with 30 prototypes in 64 dims).
      raise ValueError(f'config.objective.num_prototypes={oc.num_prototypes} must exceed '
                       f'head_output_dim + 1 = {oc.head_output_dim + 1}')
    self.network = networks.BackboneWithPrototypes(
        backbone=models.build_backbone(config.model), projector=rho_common.projector(config),
        num_prototypes=int(oc.num_prototypes))

  def loss(self, params: base.PyTree, batch_stats: base.PyTree, aux: base.PyTree,
           inputs: base.Inputs, rng: jax.Array, step: jax.Array) -> base.LossOutput:
    del rng, step
    (_, _, scores), updates = self.network.apply(
        {'params': params, 'batch_stats': batch_stats}, base.merge_views(inputs['clips']),
        train=True,
        mutable=['batch_stats'])
    loss, metrics = losses.swav_loss(rho_common.stack_views(scores, self.num_views),
                                     self.temperature,
                                     self.pairing, self.epsilon, self.sinkhorn_iters)
    return base.LossOutput(loss=loss, batch_stats=updates['batch_stats'], aux=aux, metrics=metrics)

  def trainable_mask(self, step: jax.Array) -> Optional[Dict[str, jax.Array]]:
    """Everything trains, except the prototypes while step < freeze_prototypes_epochs epochs."""
    if self.freeze_prototypes_epochs <= 0:
      return None
    _, steps_per_epoch = self.require_training_length()
    frozen_steps = self.freeze_prototypes_epochs * steps_per_epoch
    return {'prototypes': jnp.asarray(step, jnp.float32) >= frozen_steps}
