"""rho-MoCo: queries from the online encoder, keys from a momentum encoder, a queue of negatives.

Shuffle-BN. The reference shuffles the key encoder's batch across GPUs when BN is computed per
GPU: a query and its positive key computed in the same per-GPU batch share BN statistics, which
the network can exploit to find the positive ("BN leakage"); shuffling gives keys statistics from
other videos. The reference turns shuffling off when BN is synced over every GPU, because then
all queries and keys see the same statistics, those of the whole batch. Here both encoders run
on the global batch inside one jit, so BatchNorm is synced over every device by construction:
there is no per-device subset to leak, and a permutation of the global key batch would leave
every key unchanged (BN over a batch is permutation invariant; tested). We therefore do not
shuffle, like the reference under synced BN.
"""
import math
from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh, PartitionSpec

from cvrl_jax import models
from cvrl_jax import sharding
from cvrl_jax.objectives import base
from cvrl_jax.objectives import losses
from cvrl_jax.objectives import networks
from cvrl_jax.objectives import queue as queue_lib
from cvrl_jax.objectives import rho_common

QUEUE_SHARDINGS = ('batch', 'replicated')


class RhoMoCo(base.Objective):
  """Backbone + projection MLP (no BN) online; the same network as the momentum key encoder.

  aux = {'target': {'params', 'batch_stats'}, 'queue': [K, D], 'queue_ptr': int32}. Each step,
  every clip of a video is a query and the momentum keys of its other clips are its positives
  (one InfoNCE row each) against the queue; then all rho keys of the global batch are enqueued.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    oc = config.objective
    self.rho = int(oc.rho)
    self.plan = rho_common.rho_plan(self.rho)
    self.num_views = self.plan.num_views  # rho; two views of one clip at rho = 1
    self.temperature = float(oc.temperature)
    self.queue_size = int(oc.queue_size)
    if oc.queue_sharding not in QUEUE_SHARDINGS:
      raise ValueError(f'config.objective.queue_sharding must be one of {QUEUE_SHARDINGS}, '
                       f'got {oc.queue_sharding!r}')
    self.queue_sharding = oc.queue_sharding
    self.key_dim = int(oc.head_output_dim)
    if self.num_views * config.batch_size > self.queue_size:
      raise ValueError(f'config.objective.queue_size={self.queue_size} is smaller than the '
                       f'{self.num_views * config.batch_size} keys enqueued per step '
                       '(clips per video x batch_size)')
    self.network = networks.BackboneWithProjector(
        backbone=models.build_backbone(config.model), projector=rho_common.projector(config))
    self.target = rho_common.MomentumTarget(
        self.network, ('backbone', 'projector'), oc.base_momentum)

  def init_aux(self, rng: jax.Array, params: base.PyTree, batch_stats: base.PyTree,
               clips: jax.Array) -> base.PyTree:
    del clips
    return {'target': self.target.init(params, batch_stats),
            **queue_lib.init_queue(jax.random.fold_in(rng, 1), self.queue_size, self.key_dim)}

  def aux_partition_specs(self) -> Mapping[str, PartitionSpec]:
    # 'batch': the queue's rows split like the batch. Written on the global array, the loss and
    # the enqueue are the same for either layout; sharded, each device holds K / devices rows, and
    # XLA gathers the (small) queries and keys instead of the queue.
    if self.queue_sharding == 'replicated':
      return {'queue': PartitionSpec()}
    return {'queue': PartitionSpec(sharding.BATCH_AXES)}

  def aux_shardings(self, default: base.PyTree, mesh: Mesh) -> base.PyTree:
    devices = math.prod(mesh.shape[axis] for axis in sharding.BATCH_AXES)
    if self.queue_sharding == 'batch' and self.queue_size % devices:
      raise ValueError(f'config.objective.queue_size={self.queue_size} must be a multiple of the '
                       f'{devices} devices to shard it (or set '
                       "config.objective.queue_sharding='replicated')")
    return super().aux_shardings(default, mesh)

  def loss(self, params: base.PyTree, batch_stats: base.PyTree, aux: base.PyTree,
           inputs: base.Inputs, rng: jax.Array, step: jax.Array) -> base.LossOutput:
    del rng
    merged = base.merge_views(inputs['clips'])
    (_, projections), updates = self.network.apply(
        {'params': params, 'batch_stats': batch_stats}, merged, train=True,
        mutable=['batch_stats'])
    (_, key_projections), target = self.target.apply(aux['target'], merged)
    keys = losses.l2_normalize(key_projections.astype(jnp.float32))
    loss, metrics = losses.rho_moco_loss(
        rho_common.stack_views(projections, self.num_views),
        rho_common.stack_views(keys, self.num_views),
        aux['queue'], self.temperature)
    queue, queue_ptr = queue_lib.enqueue(aux['queue'], aux['queue_ptr'], keys)
    total_steps, _ = self.require_training_length()
    metrics = dict(metrics, momentum=self.target.momentum_at(step, total_steps))
    aux = dict(aux, target=target, queue=queue, queue_ptr=queue_ptr)
    return base.LossOutput(loss=loss, batch_stats=updates['batch_stats'], aux=aux, metrics=metrics)

  def update_aux(self, params: base.PyTree, aux: base.PyTree,
                 step: jax.Array) -> base.PyTree:
    # The target that step + 1 uses: m(step + 1) target + (1 - m(step + 1)) params.
    total_steps, _ = self.require_training_length()
    return dict(aux, target=self.target.update(aux['target'], params, step + 1, total_steps))
