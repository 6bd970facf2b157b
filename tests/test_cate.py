"""CATE (docs/recipes/temporal.md): the encoded augmentation parameters, the head's dependence
on them, the loss against NumPy and a short run."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cvrl_jax import config_lib
from cvrl_jax.objectives import base
from cvrl_jax.objectives import build_objective
from cvrl_jax.objectives import cate
from rho_numpy import numpy_simclr

BATCH, FRAMES, SIZE = 8, 4, 16


def tiny_config(**objective):
  config = config_lib.load_config_file('cate_demo', '/nowhere')
  config.batch_size = BATCH
  config.model.depth = 10
  config.model.width_multiplier = 0.125
  config.model.conv_impl = 'conv3d'
  config.data.num_frames = FRAMES
  config.data.image_size = SIZE
  config.objective.head_hidden_dim = 16
  config.objective.head_output_dim = 8
  config.objective.head_num_heads = 2
  for key, value in objective.items():
    config.objective[key] = value
  return config


def _inputs(rng):
  clips = rng.uniform(size=(BATCH, 2, FRAMES, SIZE, SIZE, 3)).astype(np.float32)
  starts = rng.integers(0, 40, (BATCH, 2)).astype(np.int32)
  sizes = rng.integers(8, 33, (BATCH, 2, 2))
  corners = rng.integers(0, 20, (BATCH, 2, 2))
  boxes = np.concatenate([corners, sizes], axis=-1).astype(np.int32)
  return {'clips': jnp.asarray(clips), 'view_starts': jnp.asarray(starts),
          'crop_boxes': jnp.asarray(boxes)}


def test_configs_and_bad_head():
  paper = build_objective(config_lib.load_config_file('cate_r3d50_k400'))
  assert paper.plan.host_fields == ('view_starts', 'crop_boxes')
  assert paper.clip_span == 31  # 16 frames at stride 2
  assert config_lib.load_config_file('cate_r3d50_k400').model.depth == 50
  with pytest.raises(ValueError, match="config.objective.head must be one of"):
    build_objective(tiny_config(head='rnn'))


def test_augmentation_params_by_hand():
  starts = jnp.asarray([[10, 40]])
  boxes = jnp.asarray([[[0, 0, 20, 10], [10, 5, 10, 20]]])  # y, x, h, w
  got = np.asarray(cate.augmentation_params(starts, boxes, 15, 0, 1))[0]
  # centres (10, 5) -> (15, 15): shift 5 / 20 in y, 10 / 10 in x; scales 10/20 and 20/10.
  np.testing.assert_allclose(got, [30 / 15, 0.25, 1.0, np.log(0.5), np.log(2.0)], rtol=1e-6)
  back = np.asarray(cate.augmentation_params(starts, boxes, 15, 1, 0))[0]
  np.testing.assert_allclose(back, [-2.0, -0.5, -0.5, np.log(2.0), np.log(0.5)], rtol=1e-6)


@pytest.mark.parametrize('head', ['transformer', 'mlp'])
def test_projection_depends_on_the_encoded_parameters(head):
  objective = build_objective(tiny_config(head=head))
  inputs = _inputs(np.random.default_rng(0))
  # The head's rows: told 0->1, told 1->0 per example (example-major), then zeros.
  rows = np.asarray(objective.head_params(inputs)).reshape(2, BATCH, 2, -1)
  for a, b in ((0, 1), (1, 0)):
    np.testing.assert_array_equal(rows[0, :, a], np.asarray(cate.augmentation_params(
        inputs['view_starts'], inputs['crop_boxes'], objective.clip_span, a, b)))
  assert (rows[1] == 0).all()
  params, batch_stats, _ = jax.jit(objective.init)(jax.random.key(0), inputs['clips'])

  @jax.jit
  def project(head_params):
    (_, z), _ = objective.network.apply(
        {'params': params, 'batch_stats': batch_stats}, base.merge_views(inputs['clips']),
        head_params, train=True, mutable=['batch_stats'])
    return z
  told = objective.head_params(inputs)
  shifted = told.at[0, 0].add(1.0)  # example 0, view 0 -> 1: one more clip span later
  z, z_shifted = np.asarray(project(told)), np.asarray(project(shifted))
  assert np.abs(z[0] - z_shifted[0]).max() > 1e-4
  if head == 'transformer':  # no BN: the other rows are untouched
    np.testing.assert_allclose(z[1:], z_shifted[1:], atol=1e-6)


def test_loss_matches_numpy():
  objective = build_objective(tiny_config())
  inputs = _inputs(np.random.default_rng(1))
  params, batch_stats, aux = jax.jit(objective.init)(jax.random.key(0), inputs['clips'])

  def fn(params, batch_stats, inputs):
    out = objective.loss(params, batch_stats, aux, inputs, jax.random.key(1), jnp.int32(0))
    (_, z), _ = objective.network.apply(
        {'params': params, 'batch_stats': batch_stats}, base.merge_views(inputs['clips']),
        objective.head_params(inputs), train=True, mutable=['batch_stats'])
    return dataclasses.asdict(out), z
  out, z = jax.jit(fn)(params, batch_stats, inputs)
  z = np.asarray(z, np.float64).reshape(2, BATCH, 2, -1)  # [told/plain, example, view, D]
  expected = (numpy_simclr(np.stack([z[0, :, 0], z[1, :, 1]]), 0.1, 'adjacent')
              + numpy_simclr(np.stack([z[0, :, 1], z[1, :, 0]]), 0.1, 'adjacent'))
  np.testing.assert_allclose(float(out['loss']), expected, rtol=1e-4)


def test_a_short_run_lowers_the_loss_on_a_fixed_batch():
  objective = build_objective(tiny_config())
  inputs = _inputs(np.random.default_rng(2))
  params, batch_stats, aux = jax.jit(objective.init)(jax.random.key(0), inputs['clips'])
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, batch_stats, opt_state):
    def loss_fn(p):
      out = objective.loss(p, batch_stats, aux, inputs, jax.random.key(1), jnp.int32(0))
      return out.loss, out.batch_stats
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  losses = []
  for _ in range(8):
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state)
    losses.append(float(loss))
  assert losses[-1] < losses[0] - 0.3, losses
