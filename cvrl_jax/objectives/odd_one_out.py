"""Odd-One-Out, O3N (Fernando et al., CVPR 2017; docs/recipes/pretext.md "O3N").

N + 1 = 6 elements of 6 frames from one video, one after the other in time ('consecutive'
sampler); on the device each example's pretext key picks the odd element's position and a
non-identity order of its frames (uniform over the other F! - 1 orders); the other elements keep
their frames in order. The network predicts the odd position: a shared encoder per element (our
3D backbone on each 6-frame element where the paper used dynamic images), fused by
'sum_of_differences' (sum over j > i of f_j - f_i) or 'concat', then Linear(6).
"""
import jax
import jax.numpy as jnp
import ml_collections

from cvrl_jax import models
from cvrl_jax.data import plan as plan_lib
from cvrl_jax.objectives import base
from cvrl_jax.objectives import pretext


class OddOneOut(pretext.PretextObjective):
  """config.objective: num_elements (6), element_gap (frames between elements, 0), fusion
  ('sum_of_differences' | 'concat'), element_dim (0), augment_policy ('flip_only')."""

  def __init__(self, config: ml_collections.ConfigDict):
    oc = config.objective
    self.num_elements = int(oc.num_elements)
    if self.num_elements < 2:
      raise ValueError(f'config.objective.num_elements must be at least 2, got {oc.num_elements}')
    self.num_frames = int(config.data.num_frames)
    if self.num_frames < 2:
      raise ValueError(f'an odd element needs at least 2 frames to shuffle; '
                       f'config.data.num_frames is {self.num_frames}')
    self.frame_orders = pretext.all_orders(self.num_frames)[1:]  # every order but the identity
    view = plan_lib.ViewSpec(oc.augment_policy)
    self.plan = plan_lib.ClipPlan(
        sampler='consecutive', sampler_params={'gap': int(oc.element_gap)},
        views=(view,) * self.num_elements, short_videos='skip')
    head = pretext.head_from_config(config, {'odd': self.num_elements},
                                    fusion='sum_of_differences')
    self.network = pretext.BackboneWithOrderHead(
        backbone=models.build_backbone(config.model), head=head, num_elements=self.num_elements)
    self.loss_weights = {'odd': 1.0}

  def task(self, inputs: base.Inputs):
    keys, clips = inputs['keys'], inputs['clips']  # [B, N, F, H, W, 3]
    odd = pretext.draw_classes(pretext.fold(keys, 0), self.num_elements)
    order = jnp.asarray(self.frame_orders)[
        pretext.draw_classes(pretext.fold(keys, 1), len(self.frame_orders))]
    shuffled = jax.vmap(lambda c, o, p: jnp.take(c[o], p, axis=0))(clips, odd, order)
    is_odd = jnp.arange(self.num_elements)[None, :] == odd[:, None]
    elements = jnp.where(is_odd[:, :, None, None, None, None], shuffled[:, None], clips)
    return elements, {'odd': odd}
