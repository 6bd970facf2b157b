"""VCOP, video clip order prediction (Xu et al., CVPR 2019; docs/recipes/pretext.md "VCOP").

Three clips of 16 frames, 8 frames apart (a 64-frame tuple), from the 'consecutive' sampler in
time order; on the device each example's pretext key draws one of the 3! = 6 orders (class =
its index in lexicographic order, as `itertools.permutations`), the clips are presented in that
order, and the network predicts the class: per-clip pooled features, every pair (i < j)
concatenated through a shared Linear + ReLU, the pair outputs concatenated, dropout, Linear(6).
Videos shorter than the tuple are left out of the loss and counted (the reference skips them).
"""
import jax.numpy as jnp
import ml_collections

from cvrl_jax import models
from cvrl_jax.data import plan as plan_lib
from cvrl_jax.objectives import base
from cvrl_jax.objectives import pretext

# The reference resizes frames to 128 x 171 and takes a random 112 x 112 crop per clip: a box of
# 112^2 / (128 * 171) = 57% of the frame, square.
CROP_AREA = 112 * 112 / (128 * 171)


class VCOP(pretext.PretextObjective):
  """config.objective: num_clips (3), clip_gap (8 frames between clips), fusion ('pairwise'),
  pair_dim (512), dropout (0.5), head_use_bn (False), element_dim (0), augment_policy ('none':
  the reference has no flip and no colour), crop_area_range / crop_aspect_range (empty: the
  reference's fixed 57% square crop, one per clip)."""

  def __init__(self, config: ml_collections.ConfigDict):
    oc = config.objective
    self.num_clips = int(oc.num_clips)
    if self.num_clips < 2:
      raise ValueError(f'config.objective.num_clips must be at least 2, got {self.num_clips}')
    self.orders = pretext.all_orders(self.num_clips)
    view = plan_lib.ViewSpec(oc.augment_policy, crop_area_range=(CROP_AREA, CROP_AREA),
                             crop_aspect_range=(1.0, 1.0))
    self.plan = plan_lib.ClipPlan(
        sampler='consecutive', sampler_params={'gap': int(oc.clip_gap)},
        views=(view,) * self.num_clips, short_videos='skip')
    head = pretext.head_from_config(config, {'order': len(self.orders)}, fusion='pairwise',
                                    pair_dim=512, dropout=0.5)
    self.network = pretext.BackboneWithOrderHead(
        backbone=models.build_backbone(config.model), head=head, num_elements=self.num_clips)
    self.loss_weights = {'order': 1.0}

  def task(self, inputs: base.Inputs):
    classes = pretext.draw_classes(inputs['keys'], len(self.orders))
    perms = jnp.asarray(self.orders)[classes]
    return pretext.permute_elements(inputs['clips'], perms), {'order': classes}

