"""CATE, composable augmentation encoding (Sun et al., ICCV 2021; docs/recipes/temporal.md).

Two clips per video (CVRL's views and pair sampler). The projection head is told how the two
views differ: the time shift between the clips and the shift and scale of the host crop boxes,
read from the batch's host fields `view_starts` and `crop_boxes` (the draws the pipeline used).
The query of view a is head(feature_a, params(a -> b)); its target is head(feature_b, 0), view b
projected as itself (all-zero parameters: no shift, unit scale). Both directions, each CVRL's
NT-Xent; the loss is their mean. Head: the feature and one token per parameter read by a small
Transformer (`head='transformer'`), or an MLP over [feature, parameters] (`head='mlp'`).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from cvrl_jax import models
from cvrl_jax.data import plan as plan_lib
from cvrl_jax.models import heads
from cvrl_jax.objectives import base
from cvrl_jax.objectives import losses

HEADS = ('transformer', 'mlp')
# The encoded parameters, in order (augmentation_params).
PARAM_NAMES = ('time_shift', 'crop_shift_y', 'crop_shift_x', 'crop_log_scale_h',
               'crop_log_scale_w')


def augmentation_params(starts: jax.Array, boxes: jax.Array, clip_span: int, a: int, b: int
                        ) -> jax.Array:
  """float32 [B, 5]: how view b relates to view a.

  time shift (start_b - start_a) / clip_span (clip_span = (T - 1) stride + 1 frames); the shift
  of the crop centres in units of view a's box height and width; log of the box height and width
  ratios b / a. starts: int [B, V]; boxes: int [B, V, 4] (y, x, height, width).
  """
  starts = starts.astype(jnp.float32)
  boxes = boxes.astype(jnp.float32)
  ya, xa, ha, wa = (boxes[:, a, i] for i in range(4))
  yb, xb, hb, wb = (boxes[:, b, i] for i in range(4))
  return jnp.stack([
      (starts[:, b] - starts[:, a]) / clip_span,
      ((yb + hb / 2) - (ya + ha / 2)) / ha,
      ((xb + wb / 2) - (xa + wa / 2)) / wa,
      jnp.log(hb / ha),
      jnp.log(wb / wa),
  ], axis=1)


class TransformerHead(nn.Module):
  """[feature token, one token per parameter] -> pre-LN Transformer -> Dense(output_dim) of the
  feature token. A parameter's token is value * w_p + e_p (learned w_p, e_p per parameter)."""
  dim: int
  num_layers: int
  num_heads: int
  output_dim: int

  @nn.compact
  def __call__(self, features: jax.Array, params: jax.Array, train: bool) -> jax.Array:
    del train
    num_params = params.shape[-1]
    scale = self.param('param_scale', nn.initializers.normal(1.0), (num_params, self.dim))
    embed = self.param('param_embed', nn.initializers.normal(0.02), (num_params, self.dim))
    tokens = jnp.concatenate([
        nn.Dense(self.dim, name='feature_in')(features)[:, None],
        params[..., None].astype(jnp.float32) * scale + embed], axis=1)
    for i in range(self.num_layers):
      y = nn.LayerNorm(name=f'ln_attn{i}')(tokens)
      tokens = tokens + nn.MultiHeadDotProductAttention(
          num_heads=self.num_heads, name=f'attn{i}')(y, y)
      y = nn.LayerNorm(name=f'ln_mlp{i}')(tokens)
      y = nn.Dense(4 * self.dim, name=f'mlp_in{i}')(y)
      tokens = tokens + nn.Dense(self.dim, name=f'mlp_out{i}')(nn.gelu(y))
    return nn.Dense(self.output_dim, name='out')(nn.LayerNorm(name='ln_out')(tokens[:, 0]))


class ConcatMLPHead(nn.Module):
  """MLP over [feature, parameters] (CVRL's head shape, BN in the hidden layers)."""
  mlp: nn.Module

  @nn.compact
  def __call__(self, features: jax.Array, params: jax.Array, train: bool) -> jax.Array:
    return self.mlp(jnp.concatenate([features, params.astype(features.dtype)], axis=1),
                    train=train)


class CATENetwork(nn.Module):
  """clips [N, T, H, W, 3], params [M, P] with M a multiple of N -> (features [N, C],
  projections [M, D]): the head reads the features tiled M / N times beside the parameters."""
  backbone: nn.Module
  head: nn.Module

  @nn.compact
  def __call__(self, x: jax.Array, params: jax.Array, train: bool):
    features = self.backbone(x, train=train)
    repeats = params.shape[0] // features.shape[0]
    return features, self.head(jnp.tile(features, (repeats, 1)), params, train=train)


class CATE(base.Objective):
  """Backbone + augmentation-aware projection head; CVRL's NT-Xent between told and plain views."""

  def __init__(self, config: ml_collections.ConfigDict):
    oc = config.objective
    self.temperature = float(oc.temperature)
    if oc.head not in HEADS:
      raise ValueError(f'config.objective.head must be one of {HEADS}, got {oc.head!r}')
    self.plan = plan_lib.ClipPlan(
        sampler='cvrl_pair',
        views=(plan_lib.ViewSpec('cvrl_view1'), plan_lib.ViewSpec('cvrl_view2')),
        host_fields=('view_starts', 'crop_boxes'))
    self.clip_span = (int(config.data.num_frames) - 1) * int(config.data.frame_stride) + 1
    if oc.head == 'transformer':
      head = TransformerHead(dim=oc.head_hidden_dim, num_layers=oc.head_num_layers,
                             num_heads=oc.head_num_heads, output_dim=oc.head_output_dim)
    else:
      head = ConcatMLPHead(heads.MLP(
          hidden_dims=(oc.head_hidden_dim,) * oc.head_num_layers, output_dim=oc.head_output_dim,
          use_bn=True, bn_momentum=oc.head_bn_momentum, bn_epsilon=config.model.bn_epsilon))
    self.network = CATENetwork(backbone=models.build_backbone(config.model), head=head)

  def head_params(self, inputs: base.Inputs) -> jax.Array:
    """[4B, 5] in the head's row order: told(view 0 -> 1), told(view 1 -> 0) (example-major
    pairs, like merge_views), then zeros for the plain projections of both views."""
    starts, boxes = inputs['view_starts'], inputs['crop_boxes']
    told = jnp.stack([augmentation_params(starts, boxes, self.clip_span, 0, 1),
                      augmentation_params(starts, boxes, self.clip_span, 1, 0)], axis=1)
    told = told.reshape(-1, told.shape[-1])
    return jnp.concatenate([told, jnp.zeros_like(told)], axis=0)

  def init(self, rng, clips):
    merged = base.merge_views(clips)
    dummy = jnp.zeros((2 * merged.shape[0], len(PARAM_NAMES)), jnp.float32)
    variables = self.network.init(rng, merged, dummy, train=True)
    return variables['params'], variables.get('batch_stats', {}), {}

  def loss(self, params, batch_stats, aux, inputs, rng, step) -> base.LossOutput:
    del rng, step
    (_, projections), updates = self.network.apply(
        {'params': params, 'batch_stats': batch_stats}, base.merge_views(inputs['clips']),
        self.head_params(inputs), train=True, mutable=['batch_stats'])
    told, plain = jnp.split(projections, 2)
    told_0, told_1 = base.split_views(told, 2)
    plain_0, plain_1 = base.split_views(plain, 2)
    loss_01, metrics_01 = losses.cvrl_contrastive_loss(told_0, plain_1, self.temperature)
    loss_10, metrics_10 = losses.cvrl_contrastive_loss(told_1, plain_0, self.temperature)
    metrics = {k: 0.5 * (metrics_01[k] + metrics_10[k]) for k in metrics_01}
    return base.LossOutput(loss=0.5 * (loss_01 + loss_10), batch_stats=updates.get(
        'batch_stats', {}), aux=aux, metrics=metrics)
