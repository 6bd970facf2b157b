"""Flax networks shared by the objectives: the backbone plus the heads a method trains.

Every network names its encoder `backbone`, so `params['backbone']` and
`batch_stats['backbone']` are the encoder for export and evaluation whatever the method.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from cvrl_jax.objectives import losses


class BackboneWithProjector(nn.Module):
  """clips [N, T, H, W, 3] -> (pooled features [N, C], projections [N, D])."""
  backbone: nn.Module
  projector: nn.Module

  @nn.compact
  def __call__(self, x: jax.Array, train: bool):
    features = self.backbone(x, train=train)
    return features, self.projector(features, train=train)


class BackboneProjectorPredictor(nn.Module):
  """BYOL's online network: clips -> (features [N, C], projections [N, D], predictions [N, D]).

  Parameter names `backbone` and `projector` match BackboneWithProjector, so the momentum target
  is a BackboneWithProjector whose parameters are this network's minus the predictor.
  """
  backbone: nn.Module
  projector: nn.Module
  predictor: nn.Module

  @nn.compact
  def __call__(self, x: jax.Array, train: bool):
    features = self.backbone(x, train=train)
    projections = self.projector(features, train=train)
    return features, projections, self.predictor(projections, train=train)


class Prototypes(nn.Module):
  """SwAV's prototypes: scores of L2-normalised embeddings against L2-normalised prototypes.

  The prototype vectors are the columns of `kernel` [D, K], normalised in the forward pass (so
  the loss sees unit prototypes whatever the optimiser does to their norm).
  """
  num_prototypes: int

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (z.shape[-1], self.num_prototypes), jnp.float32)
    z = losses.l2_normalize(z.astype(jnp.float32))
    return z @ losses.l2_normalize(kernel, axis=0)


class BackboneWithPrototypes(nn.Module):
  """SwAV's network: clips -> (features [N, C], projections [N, D], prototype scores [N, K])."""
  backbone: nn.Module
  projector: nn.Module
  num_prototypes: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool):
    features = self.backbone(x, train=train)
    projections = self.projector(features, train=train)
    scores = Prototypes(self.num_prototypes, name='prototypes')(projections)
    return features, projections, scores
