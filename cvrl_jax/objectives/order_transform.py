"""Order + transform: anatomy-aware joint prediction of segment order and geometric transform
(Jiao et al., ISBI 2020; docs/recipes/pretext.md "Anatomy-aware order + transform").

One clip cut into `num_segments` consecutive segments ('consecutive' sampler, gap 0); on the
device each example's pretext key draws an order class (with `order_classes='up_to_reversal'`
the N!/2 classes of OPN, presented reversed with probability 0.5; 'all': the N! orders) and one
of 8 transforms (rotation by k x 90 degrees, then a horizontal flip for t >= 4) applied to every
frame alike. Loss = CE(order) + transform_weight * CE(transform), both from one pairwise head.
Everything beyond the paper's abstract is a documented default (configs/order_transform_*.py).
"""
import jax
import jax.numpy as jnp
import ml_collections

from cvrl_jax import models
from cvrl_jax.data import plan as plan_lib
from cvrl_jax.objectives import base
from cvrl_jax.objectives import pretext

ORDER_CLASSES = ('up_to_reversal', 'all')


class OrderTransform(pretext.PretextObjective):
  """config.objective: num_segments (4), order_classes ('up_to_reversal': 12 | 'all': 24),
  transform_weight (lambda, 1.0), pair_dim (512), dropout (0.5), augment_policy ('none')."""

  def __init__(self, config: ml_collections.ConfigDict):
    oc = config.objective
    self.num_segments = int(oc.num_segments)
    if oc.order_classes not in ORDER_CLASSES:
      raise ValueError(f'config.objective.order_classes must be one of {ORDER_CLASSES}, got '
                       f'{oc.order_classes!r}')
    self.merge_reversals = oc.order_classes == 'up_to_reversal'
    self.table = (pretext.orders_up_to_reversal(self.num_segments) if self.merge_reversals
                  else pretext.all_orders(self.num_segments))
    view = plan_lib.ViewSpec(oc.augment_policy)
    self.plan = plan_lib.ClipPlan(
        sampler='consecutive', sampler_params={'gap': 0}, views=(view,) * self.num_segments,
        short_videos='skip')
    head = pretext.head_from_config(
        config, {'order': len(self.table), 'transform': pretext.NUM_TRANSFORMS},
        fusion='pairwise', pair_dim=512, dropout=0.5)
    self.network = pretext.BackboneWithOrderHead(
        backbone=models.build_backbone(config.model), head=head, num_elements=self.num_segments)
    self.loss_weights = {'order': 1.0, 'transform': float(oc.transform_weight)}

  def task(self, inputs: base.Inputs):
    keys = inputs['keys']
    classes = pretext.draw_classes(pretext.fold(keys, 0), len(self.table))
    perms = jnp.asarray(self.table)[classes]
    if self.merge_reversals:
      reverse = jax.vmap(lambda k: jax.random.bernoulli(k, 0.5))(pretext.fold(keys, 1))
      perms = jnp.where(reverse[:, None], perms[:, ::-1], perms)
    segments = pretext.permute_elements(inputs['clips'], perms)  # [B, N, T, S, S, 3]
    transforms = pretext.draw_classes(pretext.fold(keys, 2), pretext.NUM_TRANSFORMS)
    segments = jax.vmap(lambda s, t: jax.vmap(lambda c: pretext.transform_clip(c, t))(s))(
        segments, transforms)
    return segments, {'order': classes, 'transform': transforms}
