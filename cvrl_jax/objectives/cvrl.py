"""CVRL (Qian et al., CVPR 2021): two clips per video, InfoNCE over the global batch."""
import ml_collections

from cvrl_jax import models
from cvrl_jax.data import plan as plan_lib
from cvrl_jax.models import heads
from cvrl_jax.objectives import base
from cvrl_jax.objectives import losses
from cvrl_jax.objectives import networks


class CVRL(base.Objective):
  """R3D backbone + 3-layer projection MLP; loss on both views of every video in one pass.

  Both views go through the network as one batch (example-major rows, see base.merge_views), so
  the synced BN statistics cover both views of the global batch, as in the reference.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    oc = config.objective
    self.temperature = float(oc.temperature)
    # Two views from CVRL's pair sampler; frames, size and crop ranges: config.data's and CVRL's.
    self.plan = plan_lib.ClipPlan(
        sampler='cvrl_pair',
        views=(plan_lib.ViewSpec('cvrl_view1'), plan_lib.ViewSpec('cvrl_view2')))
    projector = heads.MLP(
        hidden_dims=(oc.head_hidden_dim,) * oc.head_num_layers, output_dim=oc.head_output_dim,
        use_bn=True, bn_momentum=oc.head_bn_momentum, bn_epsilon=config.model.bn_epsilon)
    self.network = networks.BackboneWithProjector(
        backbone=models.build_backbone(config.model), projector=projector)

  def loss(self, params, batch_stats, aux, inputs, rng, step) -> base.LossOutput:
    del rng, step
    (_, projections), updates = self.network.apply(
        {'params': params, 'batch_stats': batch_stats}, base.merge_views(inputs['clips']),
        train=True,
        mutable=['batch_stats'])
    z1, z2 = base.split_views(projections, 2)
    loss, metrics = losses.cvrl_contrastive_loss(z1, z2, self.temperature)
    return base.LossOutput(loss=loss, batch_stats=updates['batch_stats'], aux=aux, metrics=metrics)
