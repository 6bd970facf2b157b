"""rho-BYOL: an online network with a predictor regresses a momentum target's projections."""
import jax
import ml_collections

from cvrl_jax import models
from cvrl_jax.objectives import base
from cvrl_jax.objectives import losses
from cvrl_jax.objectives import networks
from cvrl_jax.objectives import rho_common


class RhoBYOL(base.Objective):
  """Online: backbone -> projector (BN) -> predictor (BN); target: EMA backbone -> projector.

  aux = {'target': {'params', 'batch_stats'}}. Every clip's prediction is matched to the target
  projection of every other clip of its video (symmetric over the rho clips):
  loss = -cos / temperature, which is BYOL's 2 - 2 cos up to a constant for temperature 0.5.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    oc = config.objective
    self.rho = int(oc.rho)
    self.plan = rho_common.rho_plan(self.rho)
    self.num_views = self.plan.num_views  # rho; two views of one clip at rho = 1
    self.temperature = float(oc.temperature)
    backbone = models.build_backbone(config.model)
    projector = rho_common.projector(config)
    predictor = rho_common.mlp(
        oc.predictor_hidden_dim, oc.predictor_num_layers, oc.head_output_dim, oc.head_use_bn,
        oc.head_bn_momentum, config.model.bn_epsilon)
    self.network = networks.BackboneProjectorPredictor(
        backbone=backbone, projector=projector, predictor=predictor)
    self.target = rho_common.MomentumTarget(
        networks.BackboneWithProjector(backbone=backbone, projector=projector),
        ('backbone', 'projector'), oc.base_momentum)

  def init_aux(self, rng: jax.Array, params: base.PyTree, batch_stats: base.PyTree,
               clips: jax.Array) -> base.PyTree:
    del rng, clips
    return {'target': self.target.init(params, batch_stats)}

  def loss(self, params: base.PyTree, batch_stats: base.PyTree, aux: base.PyTree,
           inputs: base.Inputs, rng: jax.Array, step: jax.Array) -> base.LossOutput:
    del rng
    merged = base.merge_views(inputs['clips'])
    (_, _, predictions), updates = self.network.apply(
        {'params': params, 'batch_stats': batch_stats}, merged, train=True,
        mutable=['batch_stats'])
    (_, targets), target = self.target.apply(aux['target'], merged)
    loss, metrics = losses.rho_byol_loss(
        rho_common.stack_views(predictions, self.num_views),
        rho_common.stack_views(targets, self.num_views),
        self.temperature)
    total_steps, _ = self.require_training_length()
    metrics = dict(metrics, momentum=self.target.momentum_at(step, total_steps))
    return base.LossOutput(loss=loss, batch_stats=updates['batch_stats'],
                           aux=dict(aux, target=target), metrics=metrics)

  def update_aux(self, params: base.PyTree, aux: base.PyTree,
                 step: jax.Array) -> base.PyTree:
    # The target that step + 1 uses: m(step + 1) target + (1 - m(step + 1)) params.
    total_steps, _ = self.require_training_length()
    return dict(aux, target=self.target.update(aux['target'], params, step + 1, total_steps))
