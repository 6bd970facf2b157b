"""Heads against a NumPy re-implementation of their forward pass and BN statistics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvrl_jax import models


def _numpy_mlp(params, x, num_hidden, use_bn, eps, last_bn=False):
  """Train-mode forward: BN with biased batch variance, as Keras/Flax compute it."""
  def bn(h, p):
    return (h - h.mean(0)) / np.sqrt(h.var(0) + eps) * p['scale'] + p['bias']
  h = np.asarray(x, np.float64)
  for i in range(num_hidden):
    h = h @ params[f'dense{i}']['kernel'] + params[f'dense{i}']['bias']
    if use_bn:
      h = bn(h, params[f'bn{i}'])
    h = np.maximum(h, 0)
  h = h @ params[f'dense{num_hidden}']['kernel'] + params[f'dense{num_hidden}']['bias']
  return bn(h, params[f'bn{num_hidden}']) if last_bn else h


def _perturbed(variables, seed=0):
  """Random BN scales/biases so that the NumPy check sees them (init is ones/zeros)."""
  leaves, treedef = jax.tree.flatten(variables['params'])
  rng = np.random.default_rng(seed)
  leaves = [np.asarray(l) + 0.1 * rng.normal(size=l.shape).astype(np.float32) for l in leaves]
  return {**variables, 'params': jax.tree.unflatten(treedef, leaves)}


def test_projection_head_is_cvrl_head_and_matches_numpy():
  head = models.projection_head(hidden_dim=16, num_layers=3, output_dim=8)
  x = jax.random.normal(jax.random.key(0), (6, 12))
  variables = _perturbed(jax.jit(lambda: head.init(jax.random.key(1), x, train=False))())
  params = variables['params']
  assert set(params) == {'dense0', 'bn0', 'dense1', 'bn1', 'dense2', 'bn2', 'dense3'}
  assert params['dense0']['kernel'].shape == (12, 16) and params['dense3']['kernel'].shape == (16, 8)
  out, state = jax.jit(lambda v: head.apply(v, x, train=True, mutable=['batch_stats']))(variables)
  np.testing.assert_allclose(out, _numpy_mlp(params, x, 3, True, 1e-5), rtol=1e-4, atol=1e-4)
  # Reference head BN momentum 0.997: running mean moves 0.3% of the way to the batch mean.
  h0 = np.asarray(x) @ params['dense0']['kernel'] + params['dense0']['bias']
  np.testing.assert_allclose(state['batch_stats']['bn0']['mean'], 0.003 * h0.mean(0),
                             rtol=1e-4, atol=1e-7)


def test_cvrl_default_head_sizes():
  head = models.projection_head()
  shapes = jax.eval_shape(lambda: head.init(jax.random.key(0), jnp.zeros((2, 2048)), train=False))
  dense = {k: v['kernel'].shape for k, v in shapes['params'].items() if k.startswith('dense')}
  assert dense == {'dense0': (2048, 2048), 'dense1': (2048, 2048), 'dense2': (2048, 2048),
                   'dense3': (2048, 128)}
  assert head.bn_momentum == 0.997 and head.bn_epsilon == 1e-5


@pytest.mark.parametrize('use_bn, last_bn', [(False, False), (True, True)])
def test_mlp_variants_match_numpy(use_bn, last_bn):
  # rho-MoCo's projector has no BN; SimCLR-style heads may normalise the output too.
  mlp = models.MLP(hidden_dims=(10,), output_dim=4, use_bn=use_bn, last_bn=last_bn,
                   bn_momentum=0.9, bn_epsilon=1e-3)
  x = jax.random.normal(jax.random.key(0), (5, 7))
  variables = _perturbed(jax.jit(lambda: mlp.init(jax.random.key(1), x, train=False))())
  assert ('batch_stats' in variables) == (use_bn or last_bn)
  out, _ = jax.jit(lambda v: mlp.apply(v, x, train=True, mutable=['batch_stats']))(variables)
  expected = _numpy_mlp(variables['params'], x, 1, use_bn, 1e-3, last_bn=last_bn)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_linear_classifier_l2_normalises_and_uses_reference_init():
  clf = models.LinearClassifier(num_classes=5, l2_normalize=True)
  x = jax.random.normal(jax.random.key(0), (3, 32)) * 7.0
  variables = clf.init(jax.random.key(1), x)
  kernel = np.asarray(variables['params']['dense']['kernel'])
  assert kernel.shape == (32, 5) and np.abs(kernel).max() <= 0.05 and kernel.std() > 0.02
  xn = np.asarray(x) / np.linalg.norm(np.asarray(x), axis=-1, keepdims=True)
  expected = xn @ kernel + np.asarray(variables['params']['dense']['bias'])
  np.testing.assert_allclose(clf.apply(variables, x), expected, rtol=1e-5, atol=1e-6)
  plain = models.LinearClassifier(num_classes=5)
  np.testing.assert_allclose(plain.apply(variables, x), np.asarray(x) @ kernel, rtol=1e-5,
                             atol=1e-5)
