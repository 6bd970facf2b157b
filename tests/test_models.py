"""R3D backbones: architecture, parameter counts, shapes, options and config plumbing."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvrl_jax import config_lib
from cvrl_jax import models
from cvrl_jax.models import resnet3d


def _cfg(**overrides):
  cfg = config_lib.model_config()
  cfg.dtype = 'float32'
  cfg.update(overrides)
  return cfg


def _abstract_variables(model, shape):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _expected_param_count(depth: int, width: float = 1.0, stem_kt: int = 5) -> int:
  """Closed-form count of conv kernels and BN scale/bias, written from the architecture spec."""
  w = lambda c: max(1, round(c * width))
  conv_bn = lambda k, cin, cout: k * cin * cout + 2 * cout
  total = conv_bn(stem_kt * 7 * 7, 3, w(64))
  cin = w(64)
  for stage, blocks in enumerate(resnet3d.BLOCK_COUNTS[depth]):
    f = w(64 * 2**stage)
    for b in range(blocks):
      stride = 2 if stage > 0 and b == 0 else 1
      if depth >= 50:
        kt = (1, 1, 3, 3)[stage]
        total += conv_bn(kt, cin, f) + conv_bn(9, f, f) + conv_bn(1, f, 4 * f)
        cout = 4 * f
      else:
        total += conv_bn(27, cin, f) + conv_bn(27, f, f)
        cout = f
      if cin != cout or stride != 1:
        total += conv_bn(1, cin, cout)
      cin = cout
  return total


@pytest.mark.parametrize('depth', [18, 34, 50, 101, 152])
def test_param_counts_match_architecture(depth):
  variables = _abstract_variables(models.build_backbone(_cfg(depth=depth)), (1, 16, 64, 64, 3))
  assert _count(variables['params']) == _expected_param_count(depth)


def test_r3d50_has_the_reference_31_7m_parameters_and_2048_features():
  model = models.build_backbone(_cfg(depth=50))
  variables = _abstract_variables(model, (1, 16, 224, 224, 3))
  assert round(_count(variables['params']) / 1e6, 1) == 31.7  # reference README: 31.7M
  assert model.num_features == 2048
  params = variables['params']
  assert set(params) == {'stem_conv', 'stem_bn'} | {
      f'stage{i + 1}_block{j + 1}' for i, n in enumerate((3, 4, 6, 3)) for j in range(n)}
  # Temporal kernels 1, 1, 3, 3 on the first conv per stage; (1, 3, 3) second; projection
  # shortcut only where the shape changes (the first block of each stage).
  for stage, kt in enumerate((1, 1, 3, 3), start=1):
    block = params[f'stage{stage}_block1']
    assert block['conv1']['kernel'].shape[:3] == (kt, 1, 1)
    assert block['conv2']['kernel'].shape[:3] == (1, 3, 3)
    assert block['conv3']['kernel'].shape[:3] == (1, 1, 1)
    assert 'shortcut_conv' in block and 'shortcut_conv' not in params[f'stage{stage}_block2']
  assert params['stem_conv']['kernel'].shape == (5, 7, 7, 3, 64)


def test_stage_shapes_at_16x224():
  model = models.build_backbone(_cfg(depth=50))
  variables = _abstract_variables(model, (1, 16, 224, 224, 3))
  features, stages = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, return_stages=True), variables,
      jax.ShapeDtypeStruct((2, 16, 224, 224, 3), jnp.float32))
  assert features.shape == (2, 2048) and features.dtype == jnp.float32
  assert {k: v.shape for k, v in stages.items()} == {
      'stem': (2, 8, 56, 56, 64),
      'stage1': (2, 8, 56, 56, 256),
      'stage2': (2, 8, 28, 28, 512),
      'stage3': (2, 8, 14, 14, 1024),
      'stage4': (2, 8, 7, 7, 2048),
  }


def test_slow_r50_stem_keeps_frames_and_basic_blocks_use_3x3x3():
  slow = models.build_backbone(_cfg(depth=50, stem_temporal_kernel=1, stem_temporal_stride=1))
  variables = _abstract_variables(slow, (1, 8, 64, 64, 3))
  _, stages = jax.eval_shape(lambda v: slow.apply(v, jnp.zeros((1, 8, 64, 64, 3)), train=False,
                                                  return_stages=True), variables)
  assert stages['stage4'].shape == (1, 8, 2, 2, 2048)
  assert variables['params']['stem_conv']['kernel'].shape == (1, 7, 7, 3, 64)

  r18 = models.build_backbone(_cfg(depth=18))
  params = _abstract_variables(r18, (1, 8, 64, 64, 3))['params']
  assert params['stage2_block1']['conv1']['kernel'].shape == (3, 3, 3, 64, 128)
  assert params['stage2_block1']['shortcut_conv']['kernel'].shape == (1, 1, 1, 64, 128)
  assert 'shortcut_conv' not in params['stage1_block1']  # 64 -> 64, stride 1: identity
  assert r18.num_features == 512


def test_slow_r50_multiply_adds_match_pyslowfast():
  # PySlowFast's model zoo lists Slow 8x8 R50 at 54.52 GFLOPs (its counter reports multiply-adds)
  # for 8 x 256 x 256 clips: the rho-family's backbone is our R3D-50 with a (1, 7, 7) stem.
  model = models.build_backbone(_cfg(depth=50, stem_temporal_kernel=1, stem_temporal_stride=1))
  shape = (1, 8, 256, 256, 3)
  variables = _abstract_variables(model, shape)
  _, state = jax.eval_shape(lambda v: model.apply(
      v, jnp.zeros(shape), train=False, capture_intermediates=True, mutable=['intermediates']),
                            variables)
  outputs = flax.traverse_util.flatten_dict(state['intermediates'])
  macs = sum(outputs[path[:-1] + ('__call__',)][0].size // kernel.shape[-1] * kernel.size
             for path, kernel in flax.traverse_util.flatten_dict(variables['params']).items()
             if path[-1] == 'kernel')
  assert macs / 1e9 == pytest.approx(54.52, abs=0.05)


@pytest.mark.parametrize('width, stage_channels, features', [
    (0.25, (64, 128, 256, 512), 512),
    (0.3, (76, 152, 308, 616), 616),  # inner widths round(64*0.3)=19, 38, 77, 154; 4x those
    (2.0, (512, 1024, 2048, 4096), 4096),
])
def test_width_multiplier(width, stage_channels, features):
  model = models.build_backbone(_cfg(depth=50, width_multiplier=width))
  variables = _abstract_variables(model, (1, 4, 32, 32, 3))
  out, stages = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 4, 32, 32, 3)), train=False,
                                                     return_stages=True), variables)
  assert tuple(stages[f'stage{i}'].shape[-1] for i in range(1, 5)) == stage_channels
  assert out.shape == (1, features) and model.num_features == features
  assert _count(variables['params']) == _expected_param_count(50, width)


def _tiny(depth=50, **overrides):
  return models.build_backbone(_cfg(depth=depth, width_multiplier=0.125, **overrides))


def _numpy_variables(model, x, seed=0):
  """Variables of `model` filled on the host: He-normal kernels, random BN affine parameters.

  Avoids compiling the model's initialisers (threefry RNG for every kernel costs many seconds of
  XLA compilation on CPU); the tests below are about the forward/backward pass, not the init.
  """
  rng = np.random.default_rng(seed)
  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if 'kernel' in name:
      return rng.normal(size=leaf.shape).astype(np.float32) * np.sqrt(2 / np.prod(leaf.shape[:-1]))
    if "'var'" in name:
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    return rng.normal(0.0, 0.1, leaf.shape).astype(np.float32) + (1.0 if 'scale' in name else 0.0)
  return jax.tree_util.tree_map_with_path(
      fill, jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False)))


def _clips(n=2, t=4, size=16, seed=0):
  return jax.random.uniform(jax.random.key(seed), (n, t, size, size, 3))


def _loss_and_grads(model, variables, x):
  """Train-mode (batch-statistics BN) features, and gradients of a fixed projection of them."""
  def loss(params):
    feats, _ = model.apply({**variables, 'params': params}, x, train=True, mutable=['batch_stats'])
    proj = jnp.cos(jnp.arange(feats.shape[-1], dtype=jnp.float32))
    return jnp.sum(jnp.tanh(feats @ proj)), feats
  (_, feats), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables['params'])
  return feats, grads


def test_remat_gives_identical_outputs_and_gradients():
  x = _clips()
  plain, remat = _tiny(depth=18), _tiny(depth=18, remat=True)
  variables = _numpy_variables(plain, x)
  assert jax.tree.structure(variables) == jax.tree.structure(_numpy_variables(remat, x))
  # One rematerialised region per block (R3D-18: 8 blocks), none without the option.
  for model, regions in ((remat, 8), (plain, 0)):
    jaxpr = jax.make_jaxpr(lambda v: model.apply(v, x, train=True, mutable=['batch_stats']))(
        variables)
    assert [eqn.primitive.name for eqn in jaxpr.jaxpr.eqns].count('remat2') == regions
  f1, g1 = _loss_and_grads(plain, variables, x)
  f2, g2 = _loss_and_grads(remat, variables, x)
  np.testing.assert_allclose(f1, f2, rtol=1e-6, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g1, g2)


def test_bfloat16_compute_keeps_float32_params_and_features():
  x = _clips()
  f32, bf16 = _tiny(), _tiny(dtype='bfloat16')
  abstract = jax.eval_shape(lambda: bf16.init(jax.random.key(0), x, train=False))
  assert {leaf.dtype for leaf in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.float32)}
  variables = _numpy_variables(bf16, x)
  out, stages = jax.jit(lambda v: bf16.apply(v, x, train=False, return_stages=True))(variables)
  assert out.dtype == jnp.float32 and stages['stage4'].dtype == jnp.bfloat16
  reference = jax.jit(lambda v: f32.apply(v, x, train=False))(variables)
  np.testing.assert_allclose(out, reference, rtol=0.05, atol=0.02 * float(jnp.abs(reference).max()))


def test_bn_momentum_and_epsilon_are_used():
  momentum, eps = 0.8, 0.5  # large epsilon so that it visibly changes the normalised output
  model = _tiny(bn_momentum=momentum, bn_epsilon=eps)
  x = _clips()
  variables = _numpy_variables(model, x)
  width = variables['params']['stem_bn']['scale'].shape
  variables['params']['stem_bn'] = {'scale': np.ones(width, np.float32),
                                    'bias': np.zeros(width, np.float32)}
  old_mean, old_var = (variables['batch_stats']['stem_bn'][k] for k in ('mean', 'var'))
  _, state = jax.jit(lambda v: model.apply(v, x, train=True, capture_intermediates=True,
                                            mutable=['batch_stats', 'intermediates']))(variables)
  conv_out = np.asarray(state['intermediates']['stem_conv']['__call__'][0], np.float64)
  bn_out = np.asarray(state['intermediates']['stem_bn']['__call__'][0], np.float64)
  mean, var = conv_out.mean(axis=(0, 1, 2, 3)), conv_out.var(axis=(0, 1, 2, 3))
  stats = state['batch_stats']['stem_bn']
  # Flax/Keras convention: new = momentum * old + (1 - momentum) * batch (biased variance).
  np.testing.assert_allclose(stats['mean'], momentum * old_mean + (1 - momentum) * mean,
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats['var'], momentum * old_var + (1 - momentum) * var,
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(bn_out, (conv_out - mean) / np.sqrt(var + eps), rtol=1e-3, atol=1e-4)


def test_build_backbone_rejects_bad_config():
  with pytest.raises(ValueError, match='model.depth'):
    models.build_backbone(_cfg(depth=42))
  with pytest.raises(ValueError, match='model.conv_impl'):
    models.build_backbone(_cfg(conv_impl='winograd'))
  with pytest.raises(ValueError, match='model.dtype'):
    models.build_backbone(_cfg(dtype='float16'))
  with pytest.raises(ValueError, match='model.width_multiplier'):
    models.build_backbone(_cfg(width_multiplier=0.0))
  with pytest.raises(ValueError, match=r'\[N, T, H, W, 3\]'):
    _tiny().init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
