"""CEP, cycle encoding prediction (Yang, Mirmehdi, Burghardt, BMVC 2021; docs/recipes/temporal.md).

Two views of one window of 3 S frames (the 'same_start' sampler; S = segment_frames, 16 in the
paper, so 48 frames at stride 1), each with its own spatial augmentation. The query view is cut
into its past, current and future segments p, c, f of S frames; the key view gives the same three
segments and a sparse clip of S of its 3 S frames, drawn per example from the pretext keys (kept
in time order). Online encoder: backbone -> appearance head A and cycle head C (both
L2-normalised) on p, c, f; forward and backward predictors on the C embeddings. Momentum encoder
(backbone, A, C; constant EMA): A of the sparse key clip, C of the key's segments.

Loss = appearance_weight A + prediction_weight CL + cycle_weight CC:
  A   multi-positive InfoNCE: p, c and f's A embeddings against the key's momentum A embedding
      (3 positives) and the queue, in one softmax (losses.multi_positive_moco_loss);
  CL  the 6 predictions p->c, c->f (forward), f->c, c->p (backward), p->f, f->p (two steps),
      each 2 - 2 cos against the momentum C embedding of the target segment, mean;
  CC  the 6 cycles back to where they started (p->c->p, c->f->c, c->p->c, f->c->f, p->f->p,
      f->p->f), each 2 - 2 cos against the online C embedding of the start, mean.
The sparse key's momentum A embeddings are enqueued.
"""
from typing import Callable, Dict, Mapping

import flax.linen as nn
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
from cvrl_jax.objectives import queue as queue_lib
from cvrl_jax.objectives import rho_common

QUERY, KEY = 0, 1
SEGMENTS = ('p', 'c', 'f')  # past, current, future
ENCODER_KEYS = ('backbone', 'appearance', 'cycle')  # what the momentum encoder copies
# Predictions: name -> the segment whose momentum C embedding is the target (the last letter).
PREDICTIONS = ('p->c', 'c->f', 'f->c', 'c->p', 'p->f', 'f->p')
# Cycles: name -> the segment whose online C embedding it must return to (the first letter).
CYCLES = ('p->c->p', 'c->f->c', 'c->p->c', 'f->c->f', 'p->f->p', 'f->p->f')


def cycle_chain(forward: Callable, backward: Callable, p: jax.Array, c: jax.Array,
                f: jax.Array) -> Dict[str, jax.Array]:
  """Every prediction (PREDICTIONS) and cycle (CYCLES) from the C embeddings of p, c, f.

  forward moves one segment on in time, backward one segment back; two-step predictions apply
  one predictor twice, and a cycle applies the other predictor as often on the way back.
  """
  out = {'p->c': forward(p), 'c->f': forward(c), 'f->c': backward(f), 'c->p': backward(c)}
  out['p->f'] = forward(out['p->c'])
  out['f->p'] = backward(out['f->c'])
  out['p->c->p'] = backward(out['p->c'])
  out['c->f->c'] = backward(out['c->f'])
  out['c->p->c'] = forward(out['c->p'])
  out['f->c->f'] = forward(out['f->c'])
  out['p->f->p'] = backward(backward(out['p->f']))
  out['f->p->f'] = forward(forward(out['f->p']))
  return out


class CycleHead(nn.Module):
  """Dense(hidden_dim) -> LayerNorm -> ReLU -> Dense(output_dim): CEP's cycle head C."""
  hidden_dim: int
  output_dim: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train
    x = nn.relu(nn.LayerNorm(name='ln')(nn.Dense(self.hidden_dim, name='dense0')(x)))
    return nn.Dense(self.output_dim, name='dense1')(x).astype(jnp.float32)


class CEPNetwork(nn.Module):
  """clips [N, T, H, W, 3] -> (features [N, C], A [N, D], C [N, D]), A and C L2-normalised;
  `online` adds the predictors' chain (cycle_chain) over segments stacked example-major."""
  backbone: nn.Module
  appearance: nn.Module
  cycle: nn.Module
  forward_predictor: nn.Module
  backward_predictor: nn.Module

  def __call__(self, x: jax.Array, train: bool):
    features = self.backbone(x, train=train)
    return (features, losses.l2_normalize(self.appearance(features, train=train)),
            losses.l2_normalize(self.cycle(features, train=train)))

  def online(self, x: jax.Array, train: bool):
    """x: [3B, T, ...], rows b*3 + s segment s of example b -> (features, A, C, chain)."""
    features, a, c = self(x, train)
    p, cur, f = base.split_views(c, len(SEGMENTS))
    chain = cycle_chain(lambda z: self.forward_predictor(z, train=train),
                        lambda z: self.backward_predictor(z, train=train), p, cur, f)
    return features, a, c, chain


def split_segments(clips: jax.Array, num_segments: int) -> jax.Array:
  """[B, num_segments * S, ...] -> [B, num_segments, S, ...], consecutive frames per segment."""
  b, t = clips.shape[:2]
  if t % num_segments:
    raise ValueError(f'a window of {t} frames does not split into {num_segments} segments')
  return clips.reshape((b, num_segments, t // num_segments) + clips.shape[2:])


def sparse_frame_indices(keys: jax.Array, window: int, count: int) -> jax.Array:
  """int32 [B, count]: per example, `count` distinct frames of `window` drawn from its key,
  in increasing order."""
  if not 0 < count <= window:
    raise ValueError(f'cannot choose {count} distinct frames of a {window}-frame window')
  draw = lambda key: jnp.sort(jax.random.permutation(key, window)[:count])
  return jax.vmap(draw)(keys).astype(jnp.int32)


class CEP(base.Objective):
  """Online encoder and predictors on the query's segments, momentum encoder on the key.

  aux = {'target': {'params', 'batch_stats'}, 'queue': [K, D], 'queue_ptr': int32}.
  config.objective: temperature, queue_size, momentum (constant EMA), segment_frames,
  window_stride, head_hidden_dim, head_output_dim, predictor_hidden_dim, predictor_bn_momentum,
  appearance_weight, prediction_weight, cycle_weight, augment_policy.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    oc = config.objective
    self.temperature = float(oc.temperature)
    self.queue_size = int(oc.queue_size)
    self.momentum = float(oc.momentum)
    self.segment_frames = int(oc.segment_frames)
    self.key_dim = int(oc.head_output_dim)
    self.weights = {'appearance': float(oc.appearance_weight),
                    'prediction': float(oc.prediction_weight), 'cycle': float(oc.cycle_weight)}
    if not 0.0 <= self.momentum <= 1.0:
      raise ValueError(f'config.objective.momentum must be in [0, 1], got {self.momentum}')
    if self.segment_frames < 1:
      raise ValueError(f'config.objective.segment_frames must be positive, got '
                       f'{self.segment_frames}')
    if config.batch_size > self.queue_size:
      raise ValueError(f'config.objective.queue_size={self.queue_size} is smaller than the '
                       f'{config.batch_size} keys enqueued per step (batch_size)')
    for name, weight in self.weights.items():
      if weight < 0:
        raise ValueError(f'config.objective.{name}_weight must be >= 0, got {weight}')
    policy = augment.get_policy(oc.augment_policy)  # its crop ranges are the host's
    view = plan_lib.ViewSpec(oc.augment_policy, num_frames=len(SEGMENTS) * self.segment_frames,
                             stride=int(oc.window_stride), crop_area_range=policy.crop_area_range,
                             crop_aspect_range=policy.crop_aspect_range)
    self.plan = plan_lib.ClipPlan(sampler='same_start', views=(view,) * 2)
    bn = dict(bn_momentum=float(oc.predictor_bn_momentum), bn_epsilon=config.model.bn_epsilon)
    predictor = lambda: heads.MLP(hidden_dims=(int(oc.predictor_hidden_dim),),
                                  output_dim=self.key_dim, use_bn=True, **bn)
    self.network = CEPNetwork(
        backbone=models.build_backbone(config.model),
        appearance=heads.MLP(hidden_dims=(int(oc.head_hidden_dim),), output_dim=self.key_dim,
                             use_bn=False),
        cycle=CycleHead(hidden_dim=int(oc.head_hidden_dim), output_dim=self.key_dim),
        forward_predictor=predictor(), backward_predictor=predictor())
    # Its BN statistics are its own, as in rho-MoCo and VTDL; its parameters a constant-m EMA.
    self.target = rho_common.MomentumTarget(self.network, ENCODER_KEYS, self.momentum)

  def query_segments(self, clips: jax.Array) -> jax.Array:
    """[B, 3, S, H, W, 3]: the query view's past, current and future segments."""
    return split_segments(clips[:, QUERY], len(SEGMENTS))

  def key_clips(self, inputs: base.Inputs) -> jax.Array:
    """[B, 4, S, H, W, 3]: the key view's three segments, then its sparse clip (S frames of the
    window, drawn from the pretext keys, in time order)."""
    key_view = inputs['clips'][:, KEY]
    indices = sparse_frame_indices(inputs['keys'], key_view.shape[1], self.segment_frames)
    sparse = jax.vmap(lambda clip, idx: jnp.take(clip, idx, axis=0))(key_view, indices)
    return jnp.concatenate([split_segments(key_view, len(SEGMENTS)), sparse[:, None]], axis=1)

  def init(self, rng, clips):
    variables = self.network.init(rng, base.merge_views(self.query_segments(clips)), train=True,
                                  method=CEPNetwork.online)
    params, batch_stats = variables['params'], variables.get('batch_stats', {})
    return params, batch_stats, self.init_aux(rng, params, batch_stats, clips)

  def init_aux(self, rng, params, batch_stats, clips):
    del clips
    return {'target': self.target.init(params, batch_stats),
            **queue_lib.init_queue(jax.random.fold_in(rng, 1), self.queue_size, self.key_dim)}

  def aux_partition_specs(self) -> Mapping[str, PartitionSpec]:
    return {'queue': PartitionSpec()}  # replicated, as VTDL's

  def loss(self, params, batch_stats, aux, inputs, rng, step) -> base.LossOutput:
    del rng, step
    num = len(SEGMENTS)
    (_, a, c, chain), updates = self.network.apply(
        {'params': params, 'batch_stats': batch_stats},
        base.merge_views(self.query_segments(inputs['clips'])), train=True,
        mutable=['batch_stats'], method=CEPNetwork.online)
    (_, key_a, key_c), target = self.target.apply(aux['target'], base.merge_views(
        self.key_clips(inputs)))
    key_a = base.split_views(key_a, num + 1)[num]
    online_c = dict(zip(SEGMENTS, base.split_views(c, num)))
    target_c = dict(zip(SEGMENTS, base.split_views(key_c, num + 1)[:num]))
    appearance, metrics = losses.multi_positive_moco_loss(
        a.reshape(-1, num, a.shape[-1]), key_a, aux['queue'], self.temperature)
    prediction = jnp.mean(jnp.stack([jnp.mean(losses.negative_cosine_loss(
        chain[name], jax.lax.stop_gradient(target_c[name[-1]]))) for name in PREDICTIONS]))
    cycle = jnp.mean(jnp.stack([jnp.mean(losses.negative_cosine_loss(
        chain[name], online_c[name[0]])) for name in CYCLES]))
    loss = (self.weights['appearance'] * appearance + self.weights['prediction'] * prediction
            + self.weights['cycle'] * cycle)
    metrics = dict(metrics, appearance_loss=appearance, prediction_loss=prediction,
                   cycle_loss=cycle)
    queue, queue_ptr = queue_lib.enqueue(aux['queue'], aux['queue_ptr'], key_a)
    aux = dict(aux, target=target, queue=queue, queue_ptr=queue_ptr)
    return base.LossOutput(loss=loss, batch_stats=updates['batch_stats'], aux=aux, metrics=metrics)

  def update_aux(self, params, aux, step):
    del step
    target = aux['target']
    new_params = momentum_lib.ema_update(
        target['params'], {k: params[k] for k in ENCODER_KEYS}, self.momentum)
    return dict(aux, target={'params': new_params, 'batch_stats': target['batch_stats']})
