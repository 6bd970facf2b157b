"""The audio-visual models: audio CNN, SpecAugment, the shared factorised Transformer, adaptors."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from cvrl_jax.models import audio_resnet
from cvrl_jax.models import av_transformer as avt

TINY = dict(hidden_size=16, num_heads=2, ffn_size=24, num_layers=2, rank=4, max_clips=3,
            hidden_dropout=0.0, attention_dropout=0.0)


def _tiny_inputs(seed=0):
  kv, ka = jax.random.split(jax.random.key(seed))
  return (jax.random.normal(kv, (2, 3, TINY['hidden_size'])),
          jax.random.normal(ka, (2, 2, TINY['hidden_size'])))


@functools.lru_cache(maxsize=1)
def _tiny_model_and_params():  # compiled once for the module's tests (arrays are immutable)
  model = avt.MultimodalTransformer(**TINY)
  visual, audio = _tiny_inputs()
  params = jax.jit(lambda: model.init(jax.random.key(0), visual, audio))()['params']
  return model, params, visual, audio


def _embedding_params(h, max_clips):
  # summary tokens, 3 position tables, joint type table, 3 embedding LayerNorms
  return 2 * h + 3 * (1 + max_clips) * h + 2 * h + 3 * 2 * h


def _projection_shapes(h, f):
  return [(h, h)] * 4 + [(h, f), (f, h)]


def factorised_encoder_params(h, f, r, groups=3):
  """One shared layer: per projection, groups x (in x r + r x r) + shared r x out + bias; 2 LNs."""
  proj = sum(groups * (i * r + r * r) + r * o + o for i, o in _projection_shapes(h, f))
  return proj + 2 * 2 * h


def dense_stack_params(h, f, layers, stacks=3):
  """`stacks` Transformers of `layers` BERT layers each: six dense projections and 2 LNs a layer."""
  layer = sum(i * o + o for i, o in _projection_shapes(h, f)) + 2 * 2 * h
  return stacks * layers * layer


def _param_shapes(model, seq=3):
  h = model.hidden_size
  x = jnp.zeros((1, seq, h))
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x, x))['params']


def test_factorised_transformer_parameter_count_against_formula():
  h, f, r, layers, clips = (TINY[k] for k in ('hidden_size', 'ffn_size', 'rank', 'num_layers',
                                               'max_clips'))
  ours = _param_shapes(avt.MultimodalTransformer(**TINY))
  assert list(ours['encoder']) == ['layer0']  # one layer for all depths and passes
  assert avt.count_params(ours['encoder']) == factorised_encoder_params(h, f, r)
  assert avt.count_params(ours) == factorised_encoder_params(h, f, r) + _embedding_params(h, clips)
  dense = _param_shapes(avt.MultimodalTransformer(
      **TINY, factorised=False, share_layers=False, share_modalities=False))
  assert avt.count_params(dense) == dense_stack_params(h, f, layers) + _embedding_params(h, clips)


def test_paper_size_reduction():
  ours = _param_shapes(avt.MultimodalTransformer(), seq=10)
  dense = _param_shapes(avt.MultimodalTransformer(
      factorised=False, share_layers=False, share_modalities=False), seq=10)
  n_ours, n_dense = avt.count_params(ours), avt.count_params(dense)
  assert avt.count_params(ours['encoder']) == factorised_encoder_params(768, 3072, 128)
  assert n_dense == dense_stack_params(768, 3072, 6) + _embedding_params(768, 10)
  # The paper: "up to 97%", 128M -> 4M parameters.
  assert 127e6 < n_dense < 128e6 and 3.8e6 < n_ours < 4e6
  assert 1 - n_ours / n_dense > 0.96


def _rotations(params):
  return {name: leaf for name, leaf in
          ((jax.tree_util.keystr(p), l) for p, l in jax.tree_util.tree_leaves_with_path(params))
          if name.endswith("['rotation']")}


def _assert_orthogonal(q, atol=1e-5):
  q = np.asarray(q, np.float64)
  eye = np.eye(q.shape[-1])
  np.testing.assert_allclose(np.swapaxes(q, -1, -2) @ q, np.broadcast_to(eye, q.shape), atol=atol)


def test_orthogonal_parametrisation_matches_scipy_expm_and_stays_orthogonal():
  w = 0.3 * jax.random.normal(jax.random.key(0), (128, 128))
  skew = np.triu(np.asarray(w, np.float64), 1)
  skew = skew - skew.T
  q = avt.orthogonal(w)
  np.testing.assert_allclose(q, scipy.linalg.expm(skew), atol=2e-5)
  np.testing.assert_allclose(q, jax.scipy.linalg.expm(jnp.asarray(skew, jnp.float32)), atol=2e-5)
  small = 1e-3 * skew  # no squaring: the Taylor polynomial alone
  np.testing.assert_allclose(avt.orthogonal(1e-3 * w), scipy.linalg.expm(small), atol=1e-6)
  _assert_orthogonal(q)
  init = avt.cayley_rotation_init(jax.random.key(1), (3, 128, 128))
  _assert_orthogonal(avt.orthogonal(init))
  det = np.linalg.det(np.asarray(avt.orthogonal(init[0]), np.float64))
  assert det == pytest.approx(1.0, abs=1e-4)  # a rotation


def test_modality_matrices_orthogonal_at_init():
  _, params, _, _ = _tiny_model_and_params()
  rotations = _rotations(params)
  assert len(rotations) == 6  # one per projection, each [3 groups, r, r]
  for w in rotations.values():
    assert w.shape == (3, TINY['rank'], TINY['rank'])
    _assert_orthogonal(avt.orthogonal(w))


def test_modality_matrices_stay_orthogonal_after_gradient_steps():
  # The model's projections are these modules; a standalone one keeps the compile small.
  dense = avt.FactorisedDense(features=12, rank=8)
  x = jax.random.normal(jax.random.key(0), (5, 10))
  params = dense.init(jax.random.key(1), x, 0)['params']
  target = jax.random.normal(jax.random.key(2), (3, 5, 12))

  def loss(p):
    return sum(jnp.sum((dense.apply({'params': p}, x, g) - target[g]) ** 2) for g in range(3))

  step = jax.jit(lambda p: jax.tree.map(lambda w, g: w - 0.05 * g, p, jax.grad(loss)(p)))
  stepped = params
  for _ in range(10):
    stepped = step(stepped)
  q0, q1 = avt.orthogonal(params['rotation']), avt.orthogonal(stepped['rotation'])
  _assert_orthogonal(q1)
  assert np.all(np.abs(q1 - q0).reshape(3, -1).max(axis=1) > 1e-2)  # every group's Q moved


def test_one_layer_receives_gradients_from_every_pass():
  model, params, visual, audio = _tiny_model_and_params()

  def grads(method, *args):
    def f(p):
      return jnp.sum(jnp.sin(model.apply({'params': p}, *args, method=method)))
    return jax.jit(jax.grad(f))(params)['encoder']['layer0']

  encode = jax.jit(lambda x, m: model.apply({'params': params}, x, m, method='encode_modality'),
                   static_argnums=1)
  passes = {
      avt.VISUAL: grads('encode_modality', visual, 'visual'),
      avt.AUDIO: grads('encode_modality', audio, 'audio'),
      # The joint pass alone: its inputs are fixed arrays, not the single passes' graphs.
      avt.JOINT: grads('fuse', encode(visual, 'visual'), encode(audio, 'audio')),
  }
  for group, g_layer in passes.items():
    for norm in ('attention_norm', 'ffn_norm'):
      assert np.abs(g_layer[norm]['scale']).max() > 0
    for projection in avt.PROJECTIONS:
      g = g_layer[projection]
      for shared in ('kernel', 'bias'):
        assert np.abs(g[shared]).max() > 0, (group, projection, shared)
      for name in ('in_proj', 'rotation'):
        norms = np.abs(np.asarray(g[name])).reshape(3, -1).max(axis=1)
        assert norms[group] > 0 and np.all(np.delete(norms, group) == 0), (
            group, projection, name, norms)


def test_shared_stack_is_one_layer_applied_num_layers_times():
  model, params, visual, audio = _tiny_model_and_params()
  out = jax.jit(lambda p: model.apply({'params': p}, visual, 'visual',
                                      method='encode_modality'))(params)
  layer = avt.TransformerLayer(TINY['hidden_size'], TINY['num_heads'], TINY['ffn_size'],
                               TINY['rank'], hidden_dropout=0.0, attention_dropout=0.0)
  emb = avt.Embeddings(1 + TINY['max_clips'], False)
  x = jnp.concatenate([jnp.broadcast_to(params['summary_tokens'][0], (2, 1, 16)), visual], 1)
  x = emb.apply({'params': params['visual_embeddings']}, x, jnp.arange(4)[None], None, True)
  apply_layer = jax.jit(lambda p, x: layer.apply({'params': p}, x, avt.VISUAL, True))
  for _ in range(TINY['num_layers']):
    x = apply_layer(params['encoder']['layer0'], x)
  np.testing.assert_allclose(out, x, rtol=1e-5, atol=1e-5)


def test_joint_pass_shapes_and_type_embeddings():
  model, p, visual, audio = _tiny_model_and_params()
  apply = jax.jit(lambda p: model.apply({'params': p}, visual, audio))
  out = apply(p)
  assert out['visual'].shape == (2, 4, 16) and out['audio'].shape == (2, 3, 16)
  assert out['joint'].shape == (2, 7, 16)
  # Swapping the two type embeddings changes the joint pass only.
  swapped = {**p, 'joint_embeddings': {**p['joint_embeddings'], 'type': {
      'embedding': p['joint_embeddings']['type']['embedding'][::-1]}}}
  out2 = apply(swapped)
  np.testing.assert_array_equal(out2['visual'], out['visual'])
  assert np.abs(out2['joint'] - out['joint']).max() > 1e-3
  with pytest.raises(ValueError, match='max_clips'):
    model.apply({'params': p}, jnp.zeros((2, 4, 16)), audio)


def _runs(mask_1d):
  """(number of masked runs, total masked) of a boolean vector."""
  m = np.asarray(mask_1d, np.int8)
  return int(np.sum(np.diff(np.concatenate([[0], m])) == 1)), int(m.sum())


def test_spec_augment_masks_have_the_configured_extent_and_follow_the_key():
  n, t, f = 64, 128, 80
  x = jnp.asarray(np.random.default_rng(0).uniform(1, 2, (n, t, f)), jnp.float32)
  key = jax.random.key(3)
  out = np.asarray(audio_resnet.spec_augment(key, x, time_rate=0.05, freq_rate=0.05))
  masked = out == 0
  max_t, max_f = audio_resnet.max_mask_width(t, 0.05), audio_resnet.max_mask_width(f, 0.05)
  assert (max_t, max_f) == (6, 4)
  widths_t, widths_f = [], []
  for i in range(n):
    rows, cols = masked[i].all(axis=1), masked[i].all(axis=0)
    # Masked cells are exactly the union of one time band and one frequency band.
    np.testing.assert_array_equal(masked[i], rows[:, None] | cols[None, :])
    np.testing.assert_array_equal(out[i][~masked[i]], np.asarray(x[i])[~masked[i]])
    for band, widths, limit in ((rows, widths_t, max_t), (cols, widths_f, max_f)):
      runs, width = _runs(band)
      assert runs <= 1 and width <= limit
      widths.append(width)
  assert max(widths_t) == max_t and max(widths_f) == max_f and min(widths_t) < max_t
  again = audio_resnet.spec_augment(key, x, time_rate=0.05, freq_rate=0.05)
  np.testing.assert_array_equal(again, out)
  other = audio_resnet.spec_augment(jax.random.key(4), x, time_rate=0.05, freq_rate=0.05)
  assert np.any(np.asarray(other) != out)
  with_channel = audio_resnet.spec_augment(key, x[..., None], time_rate=0.05, freq_rate=0.05)
  np.testing.assert_array_equal(np.asarray(with_channel)[..., 0], out)
  with pytest.raises(ValueError, match='time_rate'):
    audio_resnet.spec_augment(key, x, time_rate=1.5)


def audio_resnet_params(w, blocks=(3, 4, 6, 3), separable=(True, True, False, False), stem=9):
  """Half-width ResNet-50 parameter count by hand: convs (no bias) and BN scale + bias."""
  total = stem * 1 * w + 2 * w + stem * w * w + 2 * w  # separable stem: (1, 9) then (9, 1)
  c_in = w
  for i, n in enumerate(blocks):
    inner, out = w * 2 ** i, 4 * w * 2 ** i
    for j in range(n):
      total += c_in * inner + 2 * inner  # 1x1
      if separable[i]:
        total += 2 * (3 * inner * inner + 2 * inner)  # (1, 3) and (3, 1)
      else:
        total += 9 * inner * inner + 2 * inner
      total += inner * out + 2 * out  # 1x1 to 4x
      if j == 0:
        total += c_in * out + 2 * out  # projection shortcut
      c_in = out
  return total


def test_audio_cnn_paper_size_parameter_count():
  net = audio_resnet.AudioResNet()
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 128, 80, 1)),
                                           train=False))
  assert avt.count_params(shapes['params']) == audio_resnet_params(32)
  assert net.num_features == 1024
  p = shapes['params']
  assert p['stage4_block1']['conv2']['kernel'].shape == (3, 3, 256, 256)
  assert p['stage1_block1']['conv2']['freq_conv']['kernel'].shape == (1, 3, 32, 32)


def test_audio_cnn_shapes_separable_kernels_and_strides():
  w = 4
  net = audio_resnet.AudioResNet(base_width=w, block_counts=(1, 1, 1, 1))
  x = jax.random.normal(jax.random.key(0), (2, 19, 20, 1))
  variables = jax.jit(lambda: net.init(jax.random.key(1), x, train=False))()
  p = variables['params']
  assert p['stem']['freq_conv']['kernel'].shape == (1, 9, 1, w)  # 9 taps along frequency
  assert p['stem']['time_conv']['kernel'].shape == (9, 1, w, w)  # then 9 along time
  for stage, inner in ((1, w), (2, 2 * w)):
    conv2 = p[f'stage{stage}_block1']['conv2']
    assert conv2['freq_conv']['kernel'].shape == (1, 3, inner, inner)
    assert conv2['time_conv']['kernel'].shape == (3, 1, inner, inner)
  assert p['stage3_block1']['conv2']['kernel'].shape == (3, 3, 4 * w, 4 * w)
  np.testing.assert_array_equal(p['stage2_block1']['bn3']['scale'], 0.0)  # zero-init last BN
  features, state = jax.jit(lambda v: net.apply(
      v, x, train=True, mutable=['batch_stats', 'intermediates'], capture_intermediates=True))(
          variables)
  assert features.shape == (2, 32 * w) == (2, net.num_features)
  # Every stage halves time and frequency (SAME padding: ceil): 19 x 20 -> 2 x 2.
  stage_out = state['intermediates']['stage4_block1']['__call__'][0]
  assert stage_out.shape == (2, 2, 2, 32 * w)
  assert 'batch_stats' in state
  with pytest.raises(ValueError, match='log-mel input'):
    net.apply(variables, jnp.zeros((2, 19, 20)), train=False)


def test_visual_cnn_temporal_kernels_and_adaptor():
  cnn = avt.visual_cnn()
  shapes = jax.eval_shape(lambda: cnn.init(jax.random.key(0), jnp.zeros((1, 8, 32, 32, 3)),
                                           train=False))['params']
  assert shapes['stem_conv']['kernel'].shape == (5, 7, 7, 3, 64)
  assert cnn.stem_temporal_stride == 2
  for stage, kt in zip(range(1, 5), (1, 1, 3, 3)):
    assert shapes[f'stage{stage}_block1']['conv1']['kernel'].shape[0] == kt
  adaptor = avt.CNNAdaptor(hidden_size=8)
  feats = jax.random.normal(jax.random.key(0), (3, 5, 20))
  variables = adaptor.init(jax.random.key(1), feats)
  out = np.asarray(adaptor.apply(variables, feats), np.float64)
  dense = np.asarray(feats) @ variables['params']['dense']['kernel']
  ref = (dense - dense.mean(-1, keepdims=True)) / np.sqrt(dense.var(-1, keepdims=True) + 1e-12)
  assert out.shape == (3, 5, 8)
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
