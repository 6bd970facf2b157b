"""VTDL, temporal-discriminative learning (Wang et al., arXiv 2008.02129; docs/recipes/temporal.md).

Three views per video from the 'temporal_negative' sampler: an anchor and a positive from the
same start (they differ only in their spatial augmentation) and a temporal negative from another
start of the same video. The anchor gets TCA on the device (cvrl_jax/augment.py random_tca). The
anchor and the temporal negative go through the online encoder (backbone -> Linear 128), with
gradient for both; the positive through the EMA key encoder. InfoNCE over
[q.k+, q.queue, q.n_temporal] / T (losses.moco_loss_with_negatives); the positives' keys are
enqueued.
"""
from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import PartitionSpec

from cvrl_jax import augment
from cvrl_jax import models
from cvrl_jax.data import plan as plan_lib
from cvrl_jax.models import heads
from cvrl_jax.objectives import base
from cvrl_jax.objectives import losses
from cvrl_jax.objectives import momentum as momentum_lib
from cvrl_jax.objectives import networks
from cvrl_jax.objectives import queue as queue_lib
from cvrl_jax.objectives import rho_common

ANCHOR, POSITIVE, NEGATIVE = 0, 1, 2


class VTDL(base.Objective):
  """Online encoder on anchor (TCA) and temporal negative, EMA key encoder on the positive.

  aux = {'target': {'params', 'batch_stats'}, 'queue': [K, D], 'queue_ptr': int32}.
  config.objective: temperature, queue_size, momentum (constant EMA), head_output_dim,
  tca_max_lambda (0: no TCA), min_distance (frames), augment_policy.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    oc = config.objective
    self.temperature = float(oc.temperature)
    self.queue_size = int(oc.queue_size)
    self.momentum = float(oc.momentum)
    self.tca_max_lambda = float(oc.tca_max_lambda)
    self.key_dim = int(oc.head_output_dim)
    if not 0.0 <= self.momentum <= 1.0:
      raise ValueError(f'config.objective.momentum must be in [0, 1], got {self.momentum}')
    if not 0.0 <= self.tca_max_lambda < 1.0:
      raise ValueError(f'config.objective.tca_max_lambda must be in [0, 1), got '
                       f'{self.tca_max_lambda}')
    if config.batch_size > self.queue_size:
      raise ValueError(f'config.objective.queue_size={self.queue_size} is smaller than the '
                       f'{config.batch_size} keys enqueued per step (batch_size)')
    policy = augment.get_policy(oc.augment_policy)  # its crop ranges are the host's
    view = plan_lib.ViewSpec(oc.augment_policy, crop_area_range=policy.crop_area_range,
                             crop_aspect_range=policy.crop_aspect_range)
    self.plan = plan_lib.ClipPlan(
        sampler='temporal_negative', sampler_params={'min_distance': int(oc.min_distance)},
        views=(view,) * 3, host_fields=('view_starts',))
    # Pooled feature -> Linear -> 128 (normalised in the loss).
    projector = heads.MLP(hidden_dims=(), output_dim=self.key_dim, use_bn=False)
    self.network = networks.BackboneWithProjector(
        backbone=models.build_backbone(config.model), projector=projector)
    # Its BN statistics are its own, as in rho-MoCo; its parameters follow a constant-m EMA.
    self.target = rho_common.MomentumTarget(self.network, ('backbone', 'projector'), self.momentum)

  def init_aux(self, rng, params, batch_stats, clips):
    del clips
    return {'target': self.target.init(params, batch_stats),
            **queue_lib.init_queue(jax.random.fold_in(rng, 1), self.queue_size, self.key_dim)}

  def aux_partition_specs(self) -> Mapping[str, PartitionSpec]:
    return {'queue': PartitionSpec()}  # replicated: K (5,000 on UCF101) need not divide devices

  def anchors(self, inputs: base.Inputs) -> jax.Array:
    """The anchor views [B, T, H, W, 3] with TCA drawn from the pretext keys."""
    anchor = inputs['clips'][:, ANCHOR]
    if self.tca_max_lambda == 0.0:
      return anchor
    return jax.vmap(lambda k, c: augment.random_tca(k, c, self.tca_max_lambda))(
        inputs['keys'], anchor)

  def loss(self, params, batch_stats, aux, inputs, rng, step) -> base.LossOutput:
    del rng, step
    clips = inputs['clips']
    online = jnp.stack([self.anchors(inputs), clips[:, NEGATIVE]], axis=1)  # [B, 2, ...]
    (_, projections), updates = self.network.apply(
        {'params': params, 'batch_stats': batch_stats}, base.merge_views(online), train=True,
        mutable=['batch_stats'])
    queries, negatives = base.split_views(projections, 2)
    (_, key_projections), target = self.target.apply(aux['target'], clips[:, POSITIVE])
    keys = losses.l2_normalize(key_projections.astype(jnp.float32))
    loss, metrics = losses.moco_loss_with_negatives(
        queries, keys, aux['queue'], negatives[:, None], self.temperature)
    queue, queue_ptr = queue_lib.enqueue(aux['queue'], aux['queue_ptr'], keys)
    if 'view_starts' in inputs:  # how far in time the negatives lie (frames)
      starts = inputs['view_starts'].astype(jnp.float32)
      metrics = dict(metrics, temporal_negative_distance=jnp.mean(
          jnp.abs(starts[:, NEGATIVE] - starts[:, ANCHOR])))
    aux = dict(aux, target=target, queue=queue, queue_ptr=queue_ptr)
    return base.LossOutput(loss=loss, batch_stats=updates['batch_stats'], aux=aux, metrics=metrics)

  def update_aux(self, params, aux, step):
    del step
    target = aux['target']
    new_params = momentum_lib.ema_update(
        target['params'], {k: params[k] for k in ('backbone', 'projector')}, self.momentum)
    return dict(aux, target={'params': new_params, 'batch_stats': target['batch_stats']})
