"""Flax networks shared by the objectives: the backbone plus the heads a method trains.

Every network names its encoder `backbone`, so `params['backbone']` and
`batch_stats['backbone']` are the encoder for export and evaluation whatever the method.
"""
import flax.linen as nn
import jax


class BackboneWithProjector(nn.Module):
  """clips [N, T, H, W, 3] -> (pooled features [N, C], projections [N, D])."""
  backbone: nn.Module
  projector: nn.Module

  @nn.compact
  def __call__(self, x: jax.Array, train: bool):
    features = self.backbone(x, train=train)
    return features, self.projector(features, train=train)
