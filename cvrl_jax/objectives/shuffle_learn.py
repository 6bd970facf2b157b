"""Shuffle & Learn (Misra et al., ECCV 2016; docs/recipes/pretext.md "Shuffle & Learn").

Five single frames a < b < c < d < e in time order from the 'ordered' sampler; on the device
each example's pretext key makes the tuple positive, (b, c, d), with probability
`positive_fraction` (0.25), else negative, (b, a, d) or (b, e, d) with equal odds: the ends stay
b and d, only the middle frame changes. The network answers "in order?" (binary softmax): a
shared per-frame layer (the paper's fc7), the three concatenated, Linear(2). The paper picks
high-motion windows by optical flow; here the frames are sampled uniformly (frame_gap_range sets
the gaps between consecutive frames, so |b - d| and min(|a - b|, |d - e|) follow from it).
"""
import jax
import jax.numpy as jnp
import ml_collections

from cvrl_jax import models
from cvrl_jax.data import plan as plan_lib
from cvrl_jax.objectives import base
from cvrl_jax.objectives import pretext

POSITIVE = (1, 2, 3)  # (b, c, d) of the five sampled frames (a, b, c, d, e)
NEGATIVES = ((1, 0, 3), (1, 4, 3))  # (b, a, d), (b, e, d)


class ShuffleAndLearn(pretext.PretextObjective):
  """config.objective: frame_gap_range ((min, max) frames between consecutive sampled frames),
  positive_fraction (0.25), element_dim (4096, fc7), head_use_bn (False), layer_dropout (0),
  augment_policy ('none': a per-frame flip would tell the frames apart), frame_repeat (each
  frame shown as a static clip of this many copies: with 1, the temporal taps of the 3D backbone
  see only zero padding and keep their initial values)."""

  def __init__(self, config: ml_collections.ConfigDict):
    oc = config.objective
    self.positive_fraction = float(oc.positive_fraction)
    if not 0.0 < self.positive_fraction < 1.0:
      raise ValueError(f'config.objective.positive_fraction must be in (0, 1), got '
                       f'{oc.positive_fraction}')
    self.frame_repeat = int(oc.get('frame_repeat', 1))
    if self.frame_repeat < 1:
      raise ValueError(f'config.objective.frame_repeat must be >= 1, got {oc.frame_repeat}')
    low, high = (int(v) for v in oc.frame_gap_range)
    view = plan_lib.ViewSpec(oc.augment_policy, num_frames=1, stride=1)
    self.plan = plan_lib.ClipPlan(
        sampler='ordered', sampler_params={'min_gap': low, 'max_gap': high},
        views=(view,) * 5, short_videos='skip', shared_crop=True)
    head = pretext.head_from_config(config, {'in_order': 2}, fusion='concat', element_dim=4096)
    self.network = pretext.BackboneWithOrderHead(
        backbone=models.build_backbone(config.model), head=head, num_elements=3)
    self.loss_weights = {'in_order': 1.0}

  def task(self, inputs: base.Inputs):
    keys = inputs['keys']
    positive = jax.vmap(lambda k: jax.random.bernoulli(k, self.positive_fraction))(
        pretext.fold(keys, 0))
    which = pretext.draw_classes(pretext.fold(keys, 1), 2)
    perms = jnp.where(positive[:, None], jnp.asarray(POSITIVE)[None],
                      jnp.asarray(NEGATIVES)[which])
    frames = pretext.permute_elements(inputs['clips'], perms)
    # A static clip of frame_repeat copies: every temporal tap of the 3D backbone then trains.
    frames = jnp.repeat(frames, self.frame_repeat, axis=2)
    return frames, {'in_order': positive.astype(jnp.int32)}
