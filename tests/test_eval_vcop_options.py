"""VCOP's evaluation options against NumPy: the conv5 max-pooled retrieval feature
(eval.knn_feature='conv5_maxpool') and averaging logits over test views (eval.view_average)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvrl_jax import models
from cvrl_jax.evaluate import features
from cvrl_jax.evaluate import views


def test_view_averages():
  logits = np.random.default_rng(0).normal(size=(3, 10, 5)).astype(np.float32)
  np.testing.assert_allclose(views.average_view_scores(jnp.asarray(logits), 'logits'),
                             logits.mean(1), rtol=1e-6)
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  np.testing.assert_allclose(views.average_view_scores(jnp.asarray(logits), 'softmax'),
                             probs.mean(1), rtol=1e-5)
  with pytest.raises(ValueError, match='view_average must be one of'):
    views.average_view_scores(jnp.asarray(logits), 'median')


def test_conv5_maxpool_feature_is_the_last_stage_max_pooled():
  backbone = models.ResNet3D(depth=10, width_multiplier=0.125, stem_temporal_kernel=3,
                             stem_temporal_stride=1, stem_max_pool=False,
                             temporal_downsample=True, conv_impl='conv3d')
  video = np.random.default_rng(1).integers(0, 256, (1, 2, 4, 32, 32, 3), dtype=np.uint8)
  variables = jax.jit(lambda x: backbone.init(jax.random.key(0), x, train=False))(
      jnp.zeros((2, 4, 32, 32, 3)))
  got = np.asarray(jax.jit(lambda v, x: features.backbone_features(
      backbone, v, x, 'conv5_maxpool'))(variables, jnp.asarray(video)))
  _, stages = jax.jit(lambda v, x: backbone.apply(v, x, train=False, return_stages=True))(
      variables, jnp.asarray(video.reshape(2, 4, 32, 32, 3) / 255.0, jnp.float32))
  x = np.asarray(stages['stage4'], np.float32)  # [2, T, H, W, C]
  n, t, h, w, c = x.shape
  pooled = x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, t, h // 2, 2, w // 2, 2, c).max((3, 5))
  assert h == w == 2  # 32 pixels: the stem and stages 2-4 halve them
  np.testing.assert_allclose(got, pooled.reshape(1, 2, -1), rtol=1e-5, atol=1e-6)
  assert got.shape[-1] == t * (h // 2) * (w // 2) * c
  with pytest.raises(ValueError, match='knn_feature must be one of'):
    features.backbone_features(backbone, variables, jnp.asarray(video), 'conv4')
