"""Backbones and heads: `build_backbone(config.model)`, `MLP`, `projection_head`, `LinearClassifier`.

Importing it has no side effects: the entry points add the measured-best XLA:CPU flags
(`conv.apply_cpu_xla_flags`, through `cvrl_jax.startup.configure_process`).
"""
from cvrl_jax.models.conv import Conv3D
from cvrl_jax.models.conv import resolve_conv_impl
from cvrl_jax.models.heads import l2_normalize
from cvrl_jax.models.heads import LinearClassifier
from cvrl_jax.models.heads import MLP
from cvrl_jax.models.heads import projection_head
from cvrl_jax.models.resnet3d import build_backbone
from cvrl_jax.models.resnet3d import ResNet3D

__all__ = [
    'Conv3D', 'l2_normalize', 'LinearClassifier', 'MLP', 'ResNet3D', 'build_backbone', 'projection_head',
    'resolve_conv_impl',
]
