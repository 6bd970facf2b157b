"""rho-SimCLR: NT-Xent between clips of one video, negatives from the whole global batch."""
import jax
import ml_collections

from cvrl_jax import models
from cvrl_jax.objectives import base
from cvrl_jax.objectives import losses
from cvrl_jax.objectives import networks
from cvrl_jax.objectives import rho_common


class RhoSimCLR(base.Objective):
  """Backbone + projection MLP (BN); the loss sums NT-Xent over clip pairs.

  `objective.pairing`: 'adjacent' pairs clips (k, k+1) as the reference does, 'all' pairs every
  two clips. All rho clips go through the network as one batch, so the synced BN statistics cover
  every clip of the global batch.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    oc = config.objective
    self.rho = int(oc.rho)
    self.plan = rho_common.rho_plan(self.rho)
    self.num_views = self.plan.num_views  # rho; two views of one clip at rho = 1
    self.temperature = float(oc.temperature)
    self.pairing = oc.pairing
    losses.clip_pairs(self.num_views, self.pairing)  # validates rho and pairing
    self.network = networks.BackboneWithProjector(
        backbone=models.build_backbone(config.model), projector=rho_common.projector(config))

  def loss(self, params: base.PyTree, batch_stats: base.PyTree, aux: base.PyTree,
           inputs: base.Inputs, rng: jax.Array, step: jax.Array) -> base.LossOutput:
    del rng, step
    (_, projections), updates = self.network.apply(
        {'params': params, 'batch_stats': batch_stats}, base.merge_views(inputs['clips']),
        train=True,
        mutable=['batch_stats'])
    z = rho_common.stack_views(projections, self.num_views)
    loss, metrics = losses.rho_simclr_loss(z, self.temperature, self.pairing)
    return base.LossOutput(loss=loss, batch_stats=updates['batch_stats'], aux=aux, metrics=metrics)
