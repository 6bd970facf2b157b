"""The linear probe's standardised training: the fold back into Dense(C) on L2-normalised
features, and why it exists (plain SGD under-fits features in a narrow cone)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cvrl_jax import run_utils
from cvrl_jax.evaluate import linear

NUM_CLASSES = 3


def _l2(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_folded_classifier_gives_the_standardised_logits_from_l2_features():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(50, 6)) * np.array([1, 2, 3, 4, 5, 6]) + 3.0
  x[:, 4] = 0.0  # a ReLU that never fires on the training set
  standardizer = linear.FeatureStandardizer.fit(x)
  z = _l2(x)
  np.testing.assert_allclose(standardizer.mean, z.mean(0), rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(standardizer.active, [True] * 4 + [False, True])
  kernel, bias = rng.normal(size=(6, NUM_CLASSES)), rng.normal(size=NUM_CLASSES)
  folded = standardizer.fold({'dense': {'kernel': jnp.asarray(kernel, jnp.float32),
                                        'bias': jnp.asarray(bias, jnp.float32)}})
  probe = linear.make_probe(NUM_CLASSES)
  test = rng.normal(size=(7, 6)) + 3.0  # dimension 4 fires here: it must not count
  logits = probe.apply({'params': folded}, jnp.asarray(test, jnp.float32))
  active = [0, 1, 2, 3, 5]
  zt = (_l2(test)[:, active] - z.mean(0)[active]) / z.std(0)[active]
  np.testing.assert_allclose(np.asarray(logits), zt @ kernel[active] + bias, rtol=1e-4, atol=1e-4)


def _fit(features, labels, to_probe_params, steps=200, lr=0.5):
  probe = linear.make_probe(NUM_CLASSES)
  params = probe.init(jax.random.key(0), jnp.zeros((1, features.shape[1])))['params']
  schedule = optax.constant_schedule(lr)
  tx = optax.sgd(schedule, momentum=0.9)
  state = run_utils.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
                               aux={}, opt_state=tx.init(params))
  feats, labels = jnp.asarray(features, jnp.float32), jnp.asarray(labels, jnp.int32)
  step = jax.jit(lambda s: linear.head_update(probe, tx, schedule, s, feats, labels,
                                              jnp.ones(labels.shape, bool), to_probe_params)[0])
  for _ in range(steps):
    state = step(state)
  logits = probe.apply({'params': to_probe_params(state.params)}, feats)
  return float(jnp.mean(jnp.argmax(logits, -1) == labels))


def test_standardised_training_fits_features_in_a_narrow_cone_that_plain_sgd_under_fits():
  # Every feature is mostly one shared direction; the classes differ by 1% of its length.
  rng = np.random.default_rng(1)
  labels = rng.integers(0, NUM_CLASSES, size=300)
  centres = np.eye(NUM_CLASSES, 8) * 0.01
  features = np.zeros((300, 8))
  features[:, 7] = 1.0
  features += centres[labels] + rng.normal(scale=0.002, size=(300, 8))
  plain = _fit(features, labels, lambda p: p)
  standardised = _fit(features, labels, linear.FeatureStandardizer.fit(features).fold)
  assert standardised > 0.95  # the classes are separable
  assert plain < 0.7  # the same steps of plain SGD barely leave the shared direction
