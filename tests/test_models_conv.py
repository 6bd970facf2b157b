"""The factorized convolution is the plain 3D convolution: same outputs, same gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvrl_jax import models
from cvrl_jax.models import conv as conv_lib

CASES = [
    ((1, 1, 1), (1, 1, 1)),  # bottleneck expansion
    ((1, 1, 1), (1, 2, 2)),  # strided shortcut
    ((3, 1, 1), (1, 1, 1)),  # stage 3-4 temporal conv
    ((1, 3, 3), (1, 2, 2)),  # strided spatial conv
    ((3, 3, 3), (1, 2, 2)),  # basic block
    ((5, 7, 7), (2, 2, 2)),  # CVRL stem
    ((4, 2, 2), (3, 2, 2)),  # even kernel, odd stride: asymmetric SAME padding
]


def _numpy_same_conv3d(x, w, strides):
  """Direct NumPy convolution with TensorFlow's SAME rule: out = ceil(in / s), extra pad at the end."""
  pads = []
  for size, k, s in zip(x.shape[1:4], w.shape[:3], strides):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    pads.append((total // 2, total - total // 2, out))
  xp = np.pad(x, [(0, 0)] + [p[:2] for p in pads] + [(0, 0)])
  outs = [p[2] for p in pads]
  y = np.zeros((x.shape[0], *outs, w.shape[-1]))
  for a in range(w.shape[0]):
    for b in range(w.shape[1]):
      for c in range(w.shape[2]):
        window = xp[:, a:a + (outs[0] - 1) * strides[0] + 1:strides[0],
                    b:b + (outs[1] - 1) * strides[1] + 1:strides[1],
                    c:c + (outs[2] - 1) * strides[2] + 1:strides[2]]
        y += window @ w[a, b, c]
  return y


@pytest.mark.parametrize('kernel, strides', CASES)
def test_factorized_matches_conv3d_values_and_gradients(kernel, strides):
  x = jax.random.normal(jax.random.key(0), (2, 5, 9, 7, 3))
  w = jax.random.normal(jax.random.key(1), kernel + (3, 4))

  @jax.jit
  def both(x, w):
    outs = []
    for fn in (conv_lib.conv3d, conv_lib.factorized_conv3d):
      y, vjp = jax.vjp(lambda x, w: fn(x, w, strides), x, w)
      outs.append((y, vjp(jnp.cos(jnp.arange(y.size, dtype=y.dtype)).reshape(y.shape))))
    return outs

  (y_ref, grads_ref), (y, grads) = both(x, w)
  np.testing.assert_allclose(y_ref, _numpy_same_conv3d(np.asarray(x, np.float64),
                                                       np.asarray(w, np.float64), strides),
                             rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-4)
  for g, g_ref in zip(grads, grads_ref):
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-4)


def test_backbone_impls_share_parameters_and_agree_in_float64():
  # float64 compute removes float32 rounding, which train-mode BN over a tiny batch amplifies, so
  # the two formulations must agree to ~1e-10: they are the same function, not an approximation.
  x = np.random.default_rng(0).uniform(size=(2, 4, 24, 24, 3))
  with jax.enable_x64(True):
    nets = {impl: models.ResNet3D(depth=50, width_multiplier=0.125, dtype=jnp.float64,
                                  conv_impl=impl) for impl in ('conv3d', 'factorized')}
    shapes = [jax.eval_shape(lambda: n.init(jax.random.key(0), x, train=False))
              for n in nets.values()]
    assert jax.tree.structure(shapes[0]) == jax.tree.structure(shapes[1])
    rng = np.random.default_rng(1)
    variables = jax.tree.map(
        lambda s: rng.normal(0.0, np.sqrt(2 / np.prod(s.shape[:-1])), s.shape)
        if len(s.shape) == 5 else 1.0 + 0.1 * rng.normal(size=s.shape), shapes[0])

    def loss(params, impl):
      feats, new_state = nets[impl].apply({**variables, 'params': params}, x, train=True,
                                          mutable=['batch_stats'])
      return jnp.sum(jnp.tanh(feats @ jnp.cos(jnp.arange(feats.shape[-1])))), (feats, new_state)

    grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (_, ref), grads_ref = grad_fn(variables['params'], 'conv3d')
    (_, out), grads = grad_fn(variables['params'], 'factorized')
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
  jax.tree.map(close, out, ref)
  jax.tree.map(close, grads, grads_ref)


def test_auto_resolves_per_platform():
  assert conv_lib.resolve_conv_impl('conv3d') == 'conv3d'
  assert conv_lib.resolve_conv_impl('factorized', 'gpu') == 'factorized'
  assert conv_lib.resolve_conv_impl('auto', 'cpu') == 'factorized'
  assert conv_lib.resolve_conv_impl('auto', 'gpu') == 'factorized'
  assert conv_lib.resolve_conv_impl('auto', 'tpu') == 'conv3d'
  with pytest.raises(ValueError, match='model.conv_impl'):
    conv_lib.resolve_conv_impl('fft')


def test_cpu_xla_flags_are_added_once_and_never_override():
  flag = '--xla_cpu_experimental_ynn_fusion_type'
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  assert conv_lib.apply_cpu_xla_flags(env)
  assert env['XLA_FLAGS'] == f'--xla_force_host_platform_device_count=8 {flag}=dot,reduce'
  assert not conv_lib.apply_cpu_xla_flags(env)  # already there: unchanged
  user = {'XLA_FLAGS': f'{flag}=individual_dot'}
  assert not conv_lib.apply_cpu_xla_flags(user) and user['XLA_FLAGS'] == f'{flag}=individual_dot'
  opted_out = {conv_lib.NO_XLA_FLAGS_ENV: '1'}
  assert not conv_lib.apply_cpu_xla_flags(opted_out) and 'XLA_FLAGS' not in opted_out
