"""OPN, the Order Prediction Network (Lee et al., ICCV 2017; docs/recipes/pretext.md "OPN").

Four single frames in time order from the 'ordered' sampler, cropped with one shared box; on the
device each example's pretext key draws one of the 12 classes (the 24 orders with each order and
its reverse merged: `pretext.orders_up_to_reversal(4)`), presents the frames in that order or,
with probability 0.5, reversed (the same class), flips the whole tuple with probability 0.5,
and gives every frame its own spatial jitter (a window shifted by up to `jitter` pixels) and
channel split (one of R, G, B copied to all three). Head: a shared per-frame layer (fc6: BN,
ReLU, dropout), a shared layer on each of the 6 pairs (fc7: BN, ReLU, dropout), the 6 outputs
concatenated, Linear(12). Our backbone is the 3D R3D on one-frame clips where the paper had a
2D CaffeNet.
"""
import jax
import jax.numpy as jnp
import ml_collections

from cvrl_jax import models
from cvrl_jax.data import plan as plan_lib
from cvrl_jax.objectives import base
from cvrl_jax.objectives import pretext

NUM_FRAMES = 4


class OPN(pretext.PretextObjective):
  """config.objective: frame_gap_range ((min, max) frames between consecutive sampled frames),
  jitter (pixels; the elements are data.image_size - 2 * jitter wide), element_dim (1024),
  pair_dim (512), head_use_bn (True), layer_dropout (0.5), flip_prob (0.5), channel_split (True),
  frame_repeat (each frame shown as a static clip of this many copies: with 1, the temporal taps
  of the 3D backbone see only zero padding and keep their initial values)."""

  def __init__(self, config: ml_collections.ConfigDict):
    oc = config.objective
    self.table = pretext.orders_up_to_reversal(NUM_FRAMES)
    self.jitter = int(oc.jitter)
    self.size = int(config.data.image_size) - 2 * self.jitter
    if self.jitter < 0 or self.size < 1:
      raise ValueError(f'config.objective.jitter={oc.jitter} must be >= 0 and leave a window in '
                       f'the {config.data.image_size}-pixel frames')
    self.flip_prob = float(oc.flip_prob)
    self.frame_repeat = int(oc.get('frame_repeat', 1))
    if self.frame_repeat < 1:
      raise ValueError(f'config.objective.frame_repeat must be >= 1, got {oc.frame_repeat}')
    self.channel_split = bool(oc.channel_split)
    low, high = (int(v) for v in oc.frame_gap_range)
    view = plan_lib.ViewSpec('none', num_frames=1, stride=1)
    self.plan = plan_lib.ClipPlan(
        sampler='ordered', sampler_params={'min_gap': low, 'max_gap': high},
        views=(view,) * NUM_FRAMES, short_videos='skip', shared_crop=True)
    head = pretext.head_from_config(config, {'order': len(self.table)}, fusion='pairwise',
                                    element_dim=1024, pair_dim=512, use_bn=True,
                                    layer_dropout=0.5)
    self.network = pretext.BackboneWithOrderHead(
        backbone=models.build_backbone(config.model), head=head, num_elements=NUM_FRAMES)
    self.loss_weights = {'order': 1.0}

  def task(self, inputs: base.Inputs):
    keys = inputs['keys']
    classes = pretext.draw_classes(pretext.fold(keys, 0), len(self.table))
    perms = jnp.asarray(self.table)[classes]
    reverse = jax.vmap(lambda k: jax.random.bernoulli(k, 0.5))(pretext.fold(keys, 1))
    perms = jnp.where(reverse[:, None], perms[:, ::-1], perms)
    frames = pretext.permute_elements(inputs['clips'], perms)  # [B, 4, 1, H, W, 3]
    flip = jax.vmap(lambda k: jax.random.bernoulli(k, self.flip_prob))(pretext.fold(keys, 2))
    frames = jnp.where(flip[:, None, None, None, None, None], frames[:, :, :, :, ::-1], frames)

    def per_frame(frame, key):
      jitter_key, channel_key = jax.random.split(key)
      frame = pretext.jitter_crop(frame, jitter_key, self.size, self.jitter)
      return pretext.split_channel(frame, channel_key) if self.channel_split else frame

    frame_keys = jax.vmap(lambda k: jax.random.split(k, NUM_FRAMES))(pretext.fold(keys, 3))
    frames = jax.vmap(jax.vmap(per_frame))(frames, frame_keys)
    # A static clip of frame_repeat copies: every temporal tap of the 3D backbone then trains.
    frames = jnp.repeat(frames, self.frame_repeat, axis=2)
    return frames, {'order': classes, 'reversed': reverse}
