"""CVRL's contrastive loss against an independent NumPy implementation of the spec's formula."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from cvrl_jax.objectives import losses


def _log_softmax(x):
  x = x - x.max(axis=1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def numpy_cvrl_loss(z1, z2, tau):
  """../shared/spec/cvrl.md "Loss", line by line, in float64."""
  z1 = np.asarray(z1, np.float64)
  z2 = np.asarray(z2, np.float64)
  h1 = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
  h2 = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
  n = len(h1)
  loss = 0.0
  for a, b in ((h1, h2), (h2, h1)):
    logits_ab = a @ b.T / tau
    logits_aa = a @ a.T / tau - 1e9 * np.eye(n)
    logp = _log_softmax(np.concatenate([logits_ab, logits_aa], axis=1))
    loss += -np.mean([logp[i, i] for i in range(n)])
  logits_ab = h1 @ h2.T / tau
  accuracy = np.mean(np.argmax(logits_ab, axis=1) == np.arange(n))
  p = np.exp(_log_softmax(logits_ab))
  entropy = -np.mean(np.sum(p * np.log(p + 1e-8), axis=1))
  return loss, accuracy, entropy


def _embeddings(n=16, d=8, seed=0):
  rng = np.random.default_rng(seed)
  z1 = rng.normal(size=(n, d)).astype(np.float32)
  z2 = (z1 + 0.7 * rng.normal(size=(n, d))).astype(np.float32)  # correlated positives
  return z1, z2


def test_matches_numpy_reference():
  z1, z2 = _embeddings()
  loss, metrics = losses.cvrl_contrastive_loss(jnp.asarray(z1), jnp.asarray(z2), 0.1)
  ref_loss, ref_acc, ref_entropy = numpy_cvrl_loss(z1, z2, 0.1)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
  np.testing.assert_allclose(float(metrics['contrastive_accuracy']), ref_acc)
  np.testing.assert_allclose(float(metrics['contrastive_entropy']), ref_entropy, rtol=1e-4)
  assert 0 < ref_acc < 1  # the case exercises both hits and misses


def test_separated_and_collapsed_cases():
  n, tau = 4, 0.1
  # Identical, mutually orthogonal views: every positive logit is 1/tau, every negative 0.
  loss, metrics = losses.cvrl_contrastive_loss(jnp.eye(n), jnp.eye(n), tau)
  # Per row: softmax over [ab (n), aa (n, self masked)] -> positive e^{10} vs 2n-2 zeros.
  expected = 2 * -np.log(np.exp(1 / tau) / (np.exp(1 / tau) + 2 * n - 2))
  np.testing.assert_allclose(float(loss), expected, rtol=1e-3, atol=1e-6)
  assert float(metrics['contrastive_accuracy']) == 1.0
  # Collapsed embeddings: 2n-1 equal logits per row (self masked), loss = 2 log(2n-1).
  loss, _ = losses.cvrl_contrastive_loss(jnp.ones((n, 3)), jnp.ones((n, 3)), tau)
  np.testing.assert_allclose(float(loss), 2 * np.log(2 * n - 1), rtol=1e-5)


def test_one_device_equals_eight_sharded_devices():
  assert jax.device_count() == 8
  z1, z2 = _embeddings(n=32, d=16, seed=1)
  fn = jax.jit(lambda a, b: losses.cvrl_contrastive_loss(a, b, 0.1))
  single = fn(jax.device_put(z1, jax.devices()[0]), jax.device_put(z2, jax.devices()[0]))
  mesh = Mesh(np.array(jax.devices()), ('data',))
  sharding = NamedSharding(mesh, P('data'))
  a, b = jax.device_put(z1, sharding), jax.device_put(z2, sharding)
  assert len(a.sharding.device_set) == 8
  sharded = fn(a, b)
  np.testing.assert_allclose(float(sharded[0]), float(single[0]), rtol=1e-6)
  np.testing.assert_allclose(float(sharded[1]['contrastive_accuracy']),
                             float(single[1]['contrastive_accuracy']))
  # Global negatives: the loss of the whole sharded batch differs from the mean of per-shard
  # losses (which would only see each replica's 4 clips as negatives).
  per_shard = np.mean([float(fn(z1[i:i + 4], z2[i:i + 4])[0]) for i in range(0, 32, 4)])
  assert abs(per_shard - float(sharded[0])) > 0.1


def test_gradients_match_finite_differences():
  z1, z2 = _embeddings(n=4, d=3, seed=2)
  grads = jax.grad(lambda a, b: losses.cvrl_contrastive_loss(a, b, 0.5)[0], argnums=(0, 1))(
      jnp.asarray(z1), jnp.asarray(z2))
  assert all(np.isfinite(np.asarray(g)).all() for g in grads)
  eps = 1e-5
  for which, g in enumerate(grads):
    numeric = np.zeros_like(g, dtype=np.float64)
    for idx in np.ndindex(*g.shape):
      args_p = [z1.astype(np.float64), z2.astype(np.float64)]
      args_m = [z1.astype(np.float64), z2.astype(np.float64)]
      args_p[which][idx] += eps
      args_m[which][idx] -= eps
      numeric[idx] = (numpy_cvrl_loss(*args_p, 0.5)[0] - numpy_cvrl_loss(*args_m, 0.5)[0]) / (2 * eps)
    np.testing.assert_allclose(np.asarray(g), numeric, rtol=2e-3, atol=2e-5)


def test_l2_normalize_matches_tensorflow():
  import tensorflow as tf
  x = np.random.default_rng(3).normal(size=(5, 7)).astype(np.float32)
  x[2] = 0.0  # the zero vector stays zero in both
  np.testing.assert_allclose(np.asarray(losses.l2_normalize(jnp.asarray(x))),
                             tf.math.l2_normalize(x, axis=-1).numpy(), rtol=1e-6, atol=1e-7)
