"""Backbones and heads: `build_backbone(config.model)`, `MLP`, `projection_head`, `LinearClassifier`.

Importing this package adds the measured-best XLA:CPU flags to XLA_FLAGS if JAX has not started
yet (see `conv.apply_cpu_xla_flags`; CVRL_JAX_NO_XLA_FLAGS=1 turns it off).
"""
from cvrl_jax.models import conv as _conv
from cvrl_jax.models.conv import Conv3D
from cvrl_jax.models.conv import resolve_conv_impl
from cvrl_jax.models.heads import LinearClassifier
from cvrl_jax.models.heads import MLP
from cvrl_jax.models.heads import projection_head
from cvrl_jax.models.resnet3d import build_backbone
from cvrl_jax.models.resnet3d import ResNet3D

_conv.apply_cpu_xla_flags()

__all__ = [
    'Conv3D', 'LinearClassifier', 'MLP', 'ResNet3D', 'build_backbone', 'projection_head',
    'resolve_conv_impl',
]
