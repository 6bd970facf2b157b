"""Learning-rate schedule, weight-decay mask, SGD / LARS updates and parameter freezing against
hand-written NumPy references of the formulas in ../shared/spec/cvrl.md."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cvrl_jax import config_lib
from cvrl_jax import optim
from cvrl_jax.objectives import build_objective


def _optim_cfg(**overrides):
  cfg = config_lib.base_config().optim
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


def test_schedule_is_linear_warmup_then_cosine_to_zero():
  # K400 recipe at batch 2048: peak 0.32 * 2048 / 1024; 5 of 200 epochs of warmup.
  cfg = _optim_cfg()
  steps_per_epoch = 215_570 / 2048
  num_steps = int(200 * 215_570 // 2048)
  schedule = optim.learning_rate_schedule(cfg, 2048, steps_per_epoch, num_steps)
  peak, warmup = 0.64, round(5 * steps_per_epoch)
  for step in [0, 1, warmup // 2, warmup - 1, warmup, warmup + 1, num_steps // 2, num_steps - 1,
               num_steps]:
    if step < warmup:
      expected = peak * step / warmup
    else:
      expected = 0.5 * peak * (1 + np.cos(np.pi * (step - warmup) / (num_steps - warmup)))
    assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-7), step
  assert float(schedule(0)) == 0.0 and float(schedule(num_steps)) == pytest.approx(0.0, abs=1e-7)


def test_constant_schedule_and_no_warmup():
  schedule = optim.learning_rate_schedule(_optim_cfg(schedule='constant', warmup_epochs=0.0),
                                          256, 10.0, 100)
  assert [float(schedule(s)) for s in (0, 50, 99)] == pytest.approx([0.08] * 3)


def test_cosine_ends_at_the_final_fraction():
  # CEP's recipe: cosine to lr / 1000. Reference: peak * (f + (1 - f) * (1 + cos(pi t / T)) / 2).
  schedule = optim.learning_rate_schedule(
      _optim_cfg(warmup_epochs=0.0, final_lr_fraction=1e-3), 64, 10.0, 500)
  peak = 0.32 * 64 / 1024
  for step in (0, 125, 250, 499, 500):
    expected = peak * (1e-3 + (1 - 1e-3) * 0.5 * (1 + np.cos(np.pi * step / 500)))
    assert float(schedule(step)) == pytest.approx(expected, rel=1e-5), step
  assert float(schedule(500)) == pytest.approx(peak / 1000, rel=1e-5)


def test_step_schedule_divides_at_the_given_epochs_after_warmup():
  # VTDL's recipe at 10 steps an epoch: x0.1 at epochs 120, 160, 200 of 240; here with 2 warmup
  # epochs, which count towards the epochs (the boundaries are from the start of training).
  cfg = _optim_cfg(schedule='step', warmup_epochs=2.0, decay_epochs=(120, 160, 200),
                   base_lr=0.003, base_batch_size=64)
  schedule = optim.learning_rate_schedule(cfg, 64, 10.0, 2400)
  expected = {0: 0.0, 10: 0.0015, 20: 0.003, 1199: 0.003, 1200: 3e-4, 1599: 3e-4, 1600: 3e-5,
              2000: 3e-6, 2399: 3e-6}
  for step, lr in expected.items():
    assert float(schedule(step)) == pytest.approx(lr, rel=1e-5), step
  # Counted in iterations (OPN: x0.1 at 130k of 170k), without warmup.
  cfg = _optim_cfg(schedule='step', warmup_epochs=0.0, decay_steps=(130_000,), base_lr=0.01,
                   base_batch_size=64)
  schedule = optim.learning_rate_schedule(cfg, 64, 149.0, 170_000)
  assert [float(schedule(s)) for s in (0, 129_999, 130_000, 169_999)] == pytest.approx(
      [0.01, 0.01, 0.001, 0.001])


@pytest.mark.parametrize('overrides, message', [
    (dict(decay_epochs=()), 'needs one of config.optim.decay_epochs'),
    (dict(decay_epochs=(10,), decay_steps=(100,)), 'needs one of config.optim.decay_epochs'),
    (dict(decay_epochs=(20, 10)), 'decay_epochs must increase'),
    (dict(decay_steps=(0, 10)), 'decay_steps must increase and be > 0'),
    (dict(decay_epochs=(10,), decay_factor=1.5), 'decay_factor must be in'),
])
def test_step_schedule_bad_values_are_named(overrides, message):
  config = config_lib.base_config()
  config.optim.schedule = 'step'
  for key, value in overrides.items():
    config.optim[key] = value
  with pytest.raises(ValueError, match=message):
    config_lib.validate(config)
  config = config_lib.base_config()
  config.optim.final_lr_fraction = 2.0
  with pytest.raises(ValueError, match='final_lr_fraction must be in'):
    config_lib.validate(config)


def test_step_count_from_epochs_or_explicit():
  config = config_lib.base_config()
  assert optim.total_steps(config, 215_570) == 42_103  # floor(200 * 215570 / 1024)
  config.num_train_steps = 71_488
  assert optim.total_steps(config, 366_016) == 71_488


def _tiny_network_params():
  config = config_lib.base_config()
  config.model.depth = 18
  config.model.width_multiplier = 0.125
  objective = build_objective(config)
  clips = jnp.zeros((2, 2, 4, 32, 32, 3))
  return jax.eval_shape(lambda: objective.init(jax.random.key(0), clips)[0])


def test_weight_decay_mask_selects_conv_and_dense_kernels_only():
  mask = optim.kernel_mask(_tiny_network_params())
  flat = {jax.tree_util.keystr(path): m for path, m in jax.tree_util.tree_leaves_with_path(mask)}
  kernels = [name for name, m in flat.items() if m]
  # R3D-18: stem + 8 blocks x 2 convs + 3 projection shortcuts = 20 convs; the projection MLP has
  # 3 hidden layers + 1 output layer = 4 dense kernels.
  assert len(kernels) == 24
  assert all(name.endswith("['kernel']") for name in kernels)
  others = {name.rsplit('[', 1)[1] for name, m in flat.items() if not m}
  assert others == {"'bias']", "'scale']"}  # BN scale/offset and dense biases


def _toy_params():
  return {'conv': {'kernel': jnp.array([[1.0, -2.0], [0.5, 3.0]])},
          'bn': {'scale': jnp.array([1.0, 2.0]), 'bias': jnp.array([0.1, -0.1])}}


def _grads(i):
  rng = np.random.default_rng(i)
  return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), _toy_params())


def test_sgd_momentum_with_weight_decay_on_kernels():
  wd, lr, mu = 0.01, 0.1, 0.9
  tx = optim.make_optimizer(_optim_cfg(weight_decay=wd), lr, _toy_params())
  params, state = _toy_params(), None
  state = tx.init(params)
  ref = jax.tree.map(np.asarray, _toy_params())
  momentum = jax.tree.map(np.zeros_like, ref)
  for i in range(3):
    g = _grads(i)
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
    for layer, name in [('conv', 'kernel'), ('bn', 'scale'), ('bn', 'bias')]:
      grad = np.asarray(g[layer][name]) + (wd * ref[layer][name] if name == 'kernel' else 0.0)
      momentum[layer][name] = mu * momentum[layer][name] + grad  # PyTorch/TF SGD, no Nesterov
      ref[layer][name] = ref[layer][name] - lr * momentum[layer][name]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), params, ref)


def test_decayed_weights_equal_the_l2_term_in_the_loss():
  """CVRL adds wd * sum(||w||^2 / 2) over kernels to the loss; the optimiser's decay is the same."""
  wd = 1e-3
  params = _toy_params()
  data_loss = lambda p: jnp.sum(p['conv']['kernel'] ** 3) + jnp.sum(p['bn']['scale'] * p['bn']['bias'])
  l2_loss = lambda p: data_loss(p) + wd * 0.5 * jnp.sum(p['conv']['kernel'] ** 2)
  with_term = optim.make_optimizer(_optim_cfg(weight_decay=0.0), 0.1, params)
  with_decay = optim.make_optimizer(_optim_cfg(weight_decay=wd), 0.1, params)
  p1, s1, p2, s2 = params, with_term.init(params), params, with_decay.init(params)
  for _ in range(3):
    u1, s1 = with_term.update(jax.grad(l2_loss)(p1), s1, p1)
    u2, s2 = with_decay.update(jax.grad(data_loss)(p2), s2, p2)
    p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), p1, p2)


def test_lars_adapts_and_decays_kernels_only():
  wd, lr, mu, trust = 1e-2, 0.5, 0.9, 0.001
  tx = optim.make_optimizer(_optim_cfg(name='lars', weight_decay=wd, lars_trust_coefficient=trust),
                            lr, _toy_params())
  params = _toy_params()
  state = tx.init(params)
  ref = jax.tree.map(np.asarray, _toy_params())
  trace = jax.tree.map(np.zeros_like, ref)
  for i in range(2):
    g = _grads(i)
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
    for layer, name in [('conv', 'kernel'), ('bn', 'scale'), ('bn', 'bias')]:
      w, grad = ref[layer][name], np.asarray(g[layer][name], np.float64)
      if name == 'kernel':  # You et al.: g + wd w, scaled by trust * ||w|| / ||g + wd w||
        grad = grad + wd * w
        grad = grad * trust * np.linalg.norm(w) / np.linalg.norm(grad)
      trace[layer][name] = mu * trace[layer][name] + lr * grad
      ref[layer][name] = w - trace[layer][name]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), params, ref)


def test_frozen_parameters_and_their_momentum_stay_put():
  """rho-SwAV freezes its prototypes for the first epoch: no update, no decay, no momentum."""
  tx = optim.make_optimizer(_optim_cfg(weight_decay=0.1), 0.1, _toy_params())
  frozen = {'conv': {'kernel': False}, 'bn': {'scale': True, 'bias': True}}
  params, state = _toy_params(), tx.init(_toy_params())
  for i in range(2):  # two frozen steps
    mask = jax.tree.map(jnp.asarray, frozen)
    updates, new_state = tx.update(_grads(i), state, params)
    params, state = optim.apply_trainable_mask(
        tx, mask, params, optax.apply_updates(params, updates), state, new_state)
  np.testing.assert_array_equal(params['conv']['kernel'], _toy_params()['conv']['kernel'])
  assert not np.allclose(params['bn']['scale'], _toy_params()['bn']['scale'])
  # Unfrozen now: the kernel's first update is a fresh one (its momentum buffer is still zero).
  kernel = params['conv']['kernel']
  updates, _ = tx.update(_grads(2), state, params)
  expected = -0.1 * (np.asarray(_grads(2)['conv']['kernel']) + 0.1 * np.asarray(kernel))
  np.testing.assert_allclose(updates['conv']['kernel'], expected, rtol=1e-6)
