"""Policies and the per-clip pipeline: the reference's op sequence, branch probabilities, temporal
consistency, independence across clips, and sharded execution."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from jax.sharding import NamedSharding, PartitionSpec as P

from cvrl_jax import augment

GRAY = np.float32([0.2989, 0.5870, 0.1140])
BRANCHES = ('flip', 'jitter', 'grayscale', 'blur', 'solarize')


# --- An independent implementation of the reference's sequence (video_ssl_input.py and
# --- video_ssl_preprocess_ops.py; PySlowFast's torchvision ColorJitter for aug+), using tf.image.

def _reference_blur(x, sigma):
  """The reference's gaussian_blur: kernel size H // 10, two depthwise convolutions, SAME."""
  radius = int((x.shape[1] // 10) / 2)
  k = np.arange(-radius, radius + 1, dtype=np.float32)
  taps = np.exp(-k**2 / (2.0 * np.float32(sigma)**2))
  taps /= taps.sum()
  horizontal = np.tile(taps.reshape(1, -1, 1, 1), [1, 1, 3, 1])
  vertical = np.tile(taps.reshape(-1, 1, 1, 1), [1, 1, 3, 1])
  x = tf.nn.depthwise_conv2d(x, horizontal, strides=[1, 1, 1, 1], padding='SAME')
  return tf.nn.depthwise_conv2d(x, vertical, strides=[1, 1, 1, 1], padding='SAME').numpy()


def _reference_jitter(x, p, style):
  t, h, w, c = x.shape
  tall = x.reshape(t * h, w, c)  # the reference jitters the clip as one tall image
  for op in np.asarray(p.order):
    if op == augment.BRIGHTNESS:
      tall = tall * np.float32(p.brightness)
    elif op == augment.HUE:
      tall = tf.image.adjust_hue(tall, float(p.hue)).numpy()
    elif style == 'tf' and op == augment.CONTRAST:
      tall = tf.image.adjust_contrast(tall, float(p.contrast)).numpy()
    elif style == 'tf' and op == augment.SATURATION:
      tall = tf.image.adjust_saturation(tall, float(p.saturation)).numpy()
    elif op == augment.CONTRAST:  # torchvision/PIL: blend with the mean gray level
      f = np.float32(p.contrast)
      tall = f * tall + (1 - f) * (tall @ GRAY).mean()
    else:  # torchvision/PIL saturation: blend with the gray image
      f = np.float32(p.saturation)
      tall = f * tall + (1 - f) * (tall @ GRAY)[..., None]
    tall = np.clip(tall, 0.0, 1.0)
  return tall.reshape(x.shape)


def reference_augment(clip_uint8, p, policy):
  x = clip_uint8.astype(np.float32) / 255.0
  if policy.crop_size is not None:
    y0, x0, h, w = (int(v) for v in p.crop)
    x = tf.image.resize(x[:, y0:y0 + h, x0:x0 + w], policy.crop_size).numpy()
  if policy.flip_prob > 0 and p.flip:
    x = x[:, :, ::-1]
  if policy.jitter_prob > 0 and p.jitter:
    x = _reference_jitter(x, p, policy.jitter_style)
  if policy.grayscale_prob > 0 and p.grayscale:
    x = np.repeat(tf.image.rgb_to_grayscale(x).numpy(), 3, axis=-1)
  if policy.blur_prob > 0 and p.blur:
    x = _reference_blur(x, float(p.sigma))
  if policy.solarize_prob > 0 and p.solarize:
    x = np.where(x < 0.5, x, 1.0 - x)
  return np.clip(x, 0.0, 1.0)


def _sample(policy, keys, image_size):
  return jax.jit(jax.vmap(lambda k: augment.sample_clip_params(k, policy, image_size)))(keys)


def _covering_keys(policy, image_size):
  """A few keys whose draws between them take every branch both ways (where the policy can)."""
  keys = jax.random.split(jax.random.key(1), 64)
  params = _sample(policy, keys, image_size)
  chosen, seen = [], set()
  for i in range(len(keys)):
    outcome = {(name, bool(getattr(params, name)[i])) for name in BRANCHES}
    if outcome - seen:
      chosen.append(i)
      seen |= outcome
  for name in BRANCHES:
    if 0 < getattr(policy, f'{name}_prob') < 1:
      assert {(name, True), (name, False)} <= seen, name
  chosen = np.asarray(chosen)
  return keys[chosen], jax.tree.map(lambda a: np.asarray(a)[chosen], params)


@pytest.mark.parametrize('policy,shape', [
    ('cvrl_view2', (2, 40, 40)),  # blur radius 2; every branch both ways
    ('aug_plus', (2, 40, 40)),  # torchvision-style jitter
    (dataclasses.replace(augment.POLICIES['cvrl_view1'], crop_size=(32, 32)), (2, 40, 48)),
])
def test_pipeline_matches_reference_sequence(policy, shape):
  policy = augment.get_policy(policy)
  keys, params = _covering_keys(policy, shape[1:])
  rng = np.random.default_rng(0)
  clips = rng.integers(0, 256, (len(keys),) + shape + (3,), dtype=np.uint8)
  out = jax.jit(jax.vmap(functools.partial(augment.augment_clip, policy=policy)))(keys, clips)
  for i in range(len(keys)):
    p = jax.tree.map(lambda a: a[i], params)
    np.testing.assert_allclose(out[i], reference_augment(clips[i], p, policy), atol=2e-5,
                               err_msg=f'clip {i}: {p}')


N_DRAWS = 20000


@pytest.fixture(scope='module')
def draws():
  """N_DRAWS draws of every named policy and of both views of cvrl_view1, in one compile."""
  keys = jax.random.split(jax.random.key(2), N_DRAWS)

  def sample_all(key):
    out = {name: augment.sample_clip_params(key, policy, (8, 8))
           for name, policy in augment.POLICIES.items()}
    for view in (0, 1):  # the keys augment_batch gives the views of one example
      out[f'cvrl_view1@{view}'] = augment.sample_clip_params(
          jax.random.fold_in(key, view), augment.POLICIES['cvrl_view1'], (8, 8))
    return out

  return jax.tree.map(np.asarray, jax.jit(jax.vmap(sample_all))(keys))


@pytest.mark.parametrize('name,probs', [
    ('cvrl_view1', dict(flip=0.5, jitter=0.8, grayscale=0.2, blur=1.0, solarize=0.0)),
    ('cvrl_view2', dict(flip=0.5, jitter=0.8, grayscale=0.2, blur=0.1, solarize=0.2)),
    ('aug_plus', dict(flip=0.5, jitter=0.8, grayscale=0.2, blur=0.5, solarize=0.0)),
    ('flip_only', dict(flip=0.5, jitter=0.0, grayscale=0.0, blur=0.0, solarize=0.0)),
    ('none', dict(flip=0.0, jitter=0.0, grayscale=0.0, blur=0.0, solarize=0.0)),
    ('vtdl', dict(flip=0.5, jitter=1.0, grayscale=0.0, blur=0.0, solarize=0.0)),
    ('cep', dict(flip=0.5, jitter=1.0, grayscale=0.2, blur=0.0, solarize=0.0)),
])
def test_branch_probabilities(draws, name, probs):
  for branch, prob in probs.items():
    freq = float(np.mean(getattr(draws[name], branch)))
    tol = 5 * np.sqrt(prob * (1 - prob) / N_DRAWS)  # 5 binomial standard errors (0 at 0 and 1)
    assert abs(freq - prob) <= tol, f'{name}.{branch}: frequency {freq:.4f}, expected {prob}'


@pytest.mark.parametrize('name,delta,hue', [('cvrl_view1', 0.8, 0.2), ('aug_plus', 0.6, 0.15)])
def test_jitter_and_blur_parameter_ranges(draws, name, delta, hue):
  p, n = draws[name], N_DRAWS
  for factors in (p.brightness, p.contrast, p.saturation):  # U[1 - delta, 1 + delta]
    assert factors.min() >= 1 - delta and factors.max() <= 1 + delta
    assert factors.min() < 1 - delta + 0.01 and factors.max() > 1 + delta - 0.01
    assert abs(factors.mean() - 1.0) < 5 * 2 * delta / np.sqrt(12 * n)
  assert p.hue.min() >= -hue and p.hue.max() <= hue
  assert abs(p.hue.mean()) < 5 * 2 * hue / np.sqrt(12 * n)
  assert p.sigma.min() >= 0.1 and p.sigma.max() <= 2.0
  assert abs(p.sigma.mean() - 1.05) < 5 * 1.9 / np.sqrt(12 * n)
  # The jitter order is a uniformly random permutation.
  assert len({tuple(o) for o in p.order}) == 24
  for op in range(4):
    assert abs(np.mean(p.order[:, 0] == op) - 0.25) < 5 * np.sqrt(0.25 * 0.75 / n)


def test_views_of_one_video_draw_independently(draws):
  a, b = draws['cvrl_view1@0'], draws['cvrl_view1@1']
  assert abs(np.mean(a.flip == b.flip) - 0.5) < 5 * 0.5 / np.sqrt(N_DRAWS)
  assert abs(np.corrcoef(a.brightness, b.brightness)[0, 1]) < 5 / np.sqrt(N_DRAWS)


def test_temporal_consistency_independence_and_range():
  """Clips whose frames are identical stay identical frame to frame under every policy (one draw
  per clip); copies of one video with different keys come out different; output in [0, 1]."""
  names = ['cvrl_view1', 'cvrl_view2', 'aug_plus', 'flip_only', 'none']
  policies = [augment.get_policy(n) for n in names]
  policies[2] = dataclasses.replace(policies[2], crop_size=(24, 24))  # on-device crop as well
  b, t = 6, 3
  frame = np.random.default_rng(5).integers(0, 256, (24, 24, 3), dtype=np.uint8)
  videos = np.broadcast_to(frame, (b, len(policies), t, 24, 24, 3))
  keys = augment.example_keys(jax.random.key(6), np.arange(2 * b, dtype=np.uint32).reshape(b, 2))
  augment_batch = jax.jit(functools.partial(augment.augment_batch, policies=policies))
  out = np.asarray(augment_batch(keys, videos))

  assert out.shape == (b, len(policies), t, 24, 24, 3) and out.dtype == np.float32
  assert out.min() >= 0.0 and out.max() <= 1.0
  np.testing.assert_allclose(out, np.broadcast_to(out[:, :, :1], out.shape), atol=1e-6)
  for v, name in enumerate(names):
    views = out[:, v, 0]
    x = frame / np.float32(255)
    if name == 'none':
      np.testing.assert_allclose(views, np.broadcast_to(x, views.shape), atol=1e-6)
    elif name == 'flip_only':
      assert all(np.allclose(o, x, atol=1e-6) or np.allclose(o, x[:, ::-1], atol=1e-6)
                 for o in views)
    else:  # continuous random parameters: every example differs
      distances = np.abs(views[:, None] - views[None, :]).max(axis=(2, 3, 4))
      assert (distances + np.eye(b) > 1e-3).all(), name
  # The two CVRL views of one example differ too (keys fold_in(key, 0) and fold_in(key, 1)).
  assert (np.abs(out[:, 0] - out[:, 1]).max(axis=(1, 2, 3, 4)) > 1e-3).all()


def test_example_keys_fold_in_both_words():
  base = jax.random.key(7)
  words = np.array([[0, 0], [1, 2], [2**32 - 1, 5]], dtype=np.uint32)
  got = jax.random.key_data(augment.example_keys(base, words))
  for i, (w0, w1) in enumerate(words):
    want = jax.random.key_data(jax.random.fold_in(jax.random.fold_in(base, w0), w1))
    np.testing.assert_array_equal(got[i], want)


def test_sharded_batch_equals_unsharded_without_collectives():
  """8 fake devices, batch sharded over ('data', 'fsdp') as the trainer does: same result as on
  one device, and the compiled program moves no video data between devices."""
  mesh = jax.make_mesh((4, 2), ('data', 'fsdp'))
  sharding = NamedSharding(mesh, P(('data', 'fsdp')))
  words = np.arange(16, dtype=np.uint32).reshape(8, 2)
  videos = np.random.default_rng(8).integers(0, 256, (8, 1, 2, 16, 16, 3), dtype=np.uint8)

  def step(words, videos):
    keys = augment.example_keys(jax.random.key(9), words)
    return augment.augment_batch(keys, videos, ('cvrl_view2',))  # every op but the crop

  sharded = jax.jit(step, in_shardings=(sharding, sharding))
  words_global, videos_global = jax.device_put((words, videos), sharding)
  compiled = sharded.lower(words_global, videos_global).compile()
  hlo = compiled.as_text()
  for collective in ('all-gather', 'all-reduce', 'all-to-all', 'collective-permute',
                     'reduce-scatter'):
    assert collective not in hlo, collective
  out = compiled(words_global, videos_global)
  assert out.sharding.is_equivalent_to(sharding, out.ndim)
  np.testing.assert_allclose(out, jax.jit(step)(words, videos), atol=1e-6)


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="unknown augmentation policy 'cvrl'.*cvrl_view1"):
    augment.get_policy('cvrl')
  with pytest.raises(ValueError, match='blur_prob must be in'):
    augment.AugmentPolicy(blur_prob=1.5)
  with pytest.raises(ValueError, match='hue must be in'):
    augment.AugmentPolicy(hue=0.7)
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r'clip must be \[T, H, W, 3\]'):
    augment.augment_clip(key, jnp.zeros((4, 8, 8)), 'none')
  with pytest.raises(ValueError, match='one augmentation policy per view'):
    augment.augment_batch(jax.random.split(key, 2), jnp.zeros((2, 2, 1, 8, 8, 3)), ['none'])
  with pytest.raises(ValueError, match='one key per example'):
    augment.augment_batch(jax.random.split(key, 3), jnp.zeros((2, 1, 1, 8, 8, 3)), ['none'])
