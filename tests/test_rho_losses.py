"""rho-family losses and Sinkhorn-Knopp against independent NumPy implementations (float64)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from cvrl_jax.objectives import losses
from rho_numpy import numpy_byol, numpy_moco, numpy_simclr, numpy_sinkhorn, numpy_swav, unit


def _clips(v=3, n=8, d=6, seed=0, noise=0.8):
  """V correlated views of N random videos, float32 [V, N, D]."""
  rng = np.random.default_rng(seed)
  base = rng.normal(size=(n, d))
  return np.stack([base + noise * rng.normal(size=(n, d)) for _ in range(v)]).astype(np.float32)


def _swav_scores(v=3, n=8, d=5, k=7, seed=3):
  z = unit(_clips(v, n, d, seed))
  prototypes = unit(np.random.default_rng(seed + 1).normal(size=(k, d)))
  return (z @ prototypes.T).astype(np.float32)


@pytest.mark.parametrize('pairing', ['adjacent', 'all'])
def test_rho_simclr_matches_numpy(pairing):
  z = _clips(v=3)
  loss, metrics = losses.rho_simclr_loss(jnp.asarray(z), 0.1, pairing)
  np.testing.assert_allclose(float(loss), numpy_simclr(z, 0.1, pairing), rtol=1e-5)
  assert 0.0 <= float(metrics['contrastive_accuracy']) <= 1.0


def test_clip_pairs():
  assert losses.clip_pairs(4, 'adjacent') == ((0, 1), (1, 2), (2, 3))
  assert losses.clip_pairs(3, 'all') == ((0, 1), (0, 2), (1, 2))
  with pytest.raises(ValueError, match='pairing'):
    losses.clip_pairs(3, 'random')


@pytest.mark.parametrize('v', [2, 3])
def test_rho_moco_matches_numpy(v):
  q = _clips(v=v, seed=1)
  k = q + 0.3 * np.random.default_rng(2).normal(size=q.shape).astype(np.float32)
  queue = unit(np.random.default_rng(3).normal(size=(20, q.shape[-1]))).astype(np.float32)
  loss, metrics = losses.rho_moco_loss(jnp.asarray(q), jnp.asarray(k), jnp.asarray(queue), 0.2)
  ref_loss, ref_acc = numpy_moco(q, k, queue, 0.2)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
  np.testing.assert_allclose(float(metrics['moco_accuracy']), ref_acc, rtol=1e-6)
  assert 0.0 < ref_acc < 1.0


def test_rho_moco_gradient_matches_finite_differences_and_stops_at_keys():
  q = _clips(v=2, n=3, d=3, seed=4)
  k = _clips(v=2, n=3, d=3, seed=5)
  queue = unit(np.random.default_rng(6).normal(size=(5, 3))).astype(np.float32)
  grad_q, grad_k, grad_queue = jax.grad(
      lambda a, b, c: losses.rho_moco_loss(a, b, c, 0.5)[0], argnums=(0, 1, 2))(q, k, queue)
  assert not np.any(np.asarray(grad_k)) and not np.any(np.asarray(grad_queue))
  numeric = np.zeros(q.shape)
  eps = 1e-6
  for idx in np.ndindex(*q.shape):
    plus, minus = q.astype(np.float64), q.astype(np.float64)
    plus[idx] += eps
    minus[idx] -= eps
    difference = numpy_moco(plus, k, queue, 0.5)[0] - numpy_moco(minus, k, queue, 0.5)[0]
    numeric[idx] = difference / (2 * eps)
  np.testing.assert_allclose(np.asarray(grad_q), numeric, rtol=2e-3, atol=2e-5)


@pytest.mark.parametrize('v', [2, 4])
def test_rho_byol_matches_numpy_and_mse_form(v):
  p = _clips(v=v, seed=7)
  z = p[::-1] + _clips(v=v, seed=8)  # correlated targets: cosines well away from 0
  loss, metrics = losses.rho_byol_loss(jnp.asarray(p), jnp.asarray(z), 0.5)
  np.testing.assert_allclose(float(loss), numpy_byol(p, z, 0.5), rtol=1e-5)
  # BYOL's normalised MSE, 2 - 2cos, summed the same way: equal to our loss plus 2 per query clip.
  pn, zn = unit(p), unit(z)
  mse = sum(np.mean([np.mean(np.sum((pn[i] - zn[j]) ** 2, axis=1)) for j in range(v) if j != i])
            for i in range(v))
  np.testing.assert_allclose(mse, float(loss) + 2.0 * v, atol=1e-5)
  np.testing.assert_allclose(float(metrics['byol_cosine']), (float(loss) / v) * -0.5, rtol=1e-5)
  assert float(metrics['byol_cosine']) > 0.2
  grad_z = jax.grad(lambda a, b: losses.rho_byol_loss(a, b)[0], argnums=1)(p, z)
  assert not np.any(np.asarray(grad_z))  # targets get no gradient


def test_sinkhorn_matches_reference_and_marginals():
  scores = _swav_scores()[0]  # [N=8, K=7]
  codes = np.asarray(losses.sinkhorn_knopp(jnp.asarray(scores), 0.05, 3))
  np.testing.assert_allclose(codes, numpy_sinkhorn(scores, 0.05, 3), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(codes.sum(axis=1), 1.0, rtol=1e-6)  # each sample: a distribution
  # Run to convergence: every prototype then receives the same share, N / K, of the N samples.
  converged = np.asarray(losses.sinkhorn_knopp(jnp.asarray(scores), 0.5, 500))
  np.testing.assert_allclose(converged.sum(axis=0), np.full(7, 8 / 7), rtol=1e-4)
  np.testing.assert_allclose(converged.sum(axis=1), 1.0, rtol=1e-6)


def test_sinkhorn_is_stable_for_large_scores():
  scores = np.array([[40.0, -40.0], [-40.0, 40.0], [39.0, 0.0]], np.float32)  # exp(800) overflows
  codes = np.asarray(losses.sinkhorn_knopp(jnp.asarray(scores), 0.05, 3))
  assert np.all(np.isfinite(codes))
  np.testing.assert_allclose(codes, numpy_sinkhorn(scores - scores.max(), 0.05, 3), rtol=1e-4,
                             atol=1e-7)


@pytest.mark.parametrize('pairing', ['adjacent', 'all'])
def test_swav_loss_matches_numpy(pairing):
  scores = _swav_scores()
  loss, metrics = losses.swav_loss(jnp.asarray(scores), 0.1, pairing)
  np.testing.assert_allclose(float(loss), numpy_swav(scores, 0.1, pairing), rtol=1e-4)
  assert 0.0 < float(metrics['swav_prototypes_used']) <= 1.0


def test_sharded_global_batch_equals_unsharded():
  """On 8 devices with the batch sharded, Sinkhorn and every loss see the whole global batch."""
  assert jax.device_count() == 8
  mesh = jax.make_mesh((8,), ('data',), axis_types=(AxisType.Auto,))
  rows = NamedSharding(mesh, P(None, 'data'))  # [V, N, ...] with N split over devices
  scores = _swav_scores(v=2, n=32, k=5, seed=9)
  z = _clips(v=3, n=32, seed=10)
  queue = unit(np.random.default_rng(11).normal(size=(64, z.shape[-1]))).astype(np.float32)
  fns = {
      'sinkhorn': lambda s, z, qu: losses.sinkhorn_knopp(s[0]),
      'swav': lambda s, z, qu: losses.swav_loss(s, 0.1, 'all')[0],
      'simclr': lambda s, z, qu: losses.rho_simclr_loss(z, 0.1, 'all')[0],
      'moco': lambda s, z, qu: losses.rho_moco_loss(z, z[::-1], qu, 0.1)[0],
      'byol': lambda s, z, qu: losses.rho_byol_loss(z, z[::-1])[0],
  }
  sharded_args = (jax.device_put(scores, rows), jax.device_put(z, rows),
                  jax.device_put(queue, NamedSharding(mesh, P('data'))))
  for name, fn in fns.items():
    single = np.asarray(jax.jit(fn)(scores, z, queue))
    sharded = np.asarray(jax.jit(fn)(*sharded_args))
    np.testing.assert_allclose(sharded, single, rtol=2e-5, atol=1e-7, err_msg=name)
  # The Sinkhorn sums span all replicas: per-shard codes (4 samples each) differ.
  per_shard = np.concatenate([np.asarray(losses.sinkhorn_knopp(jnp.asarray(scores[0, i:i + 4])))
                              for i in range(0, 32, 4)])
  assert np.abs(per_shard - np.asarray(jax.jit(fns['sinkhorn'])(*sharded_args))).max() > 1e-3


def test_bad_shapes_raise_clear_errors():
  with pytest.raises(ValueError, match=r'\[V, N, D\]'):
    losses.rho_byol_loss(jnp.zeros((4, 3)), jnp.zeros((4, 3)))
  with pytest.raises(ValueError, match='keys must match'):
    losses.rho_moco_loss(jnp.zeros((2, 4, 3)), jnp.zeros((2, 5, 3)), jnp.zeros((6, 3)))
  with pytest.raises(ValueError, match=r'\[N, K\]'):
    losses.sinkhorn_knopp(jnp.zeros((2, 3, 4)))
