"""CEP (docs/recipes/temporal.md): the multi-positive InfoNCE and the whole loss against NumPy,
the sparse key frames, the EMA, a short run, and the key encoder and queue over a resume."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from cvrl_jax import config_lib
from cvrl_jax import optim
from cvrl_jax import trainer
from cvrl_jax.objectives import base
from cvrl_jax.objectives import build_objective
from cvrl_jax.objectives import cep
from cvrl_jax.objectives import losses
from rho_numpy import unit
import train_testlib as lib
from train_testlib import env  # noqa: F401  (the module fixture)
from test_temporal_train import _config

BATCH, SEGMENT, SIZE = 8, 2, 16
WINDOW = 3 * SEGMENT


def tiny_config(**objective):
  config = config_lib.load_config_file('cep_demo', '/nowhere')
  config.batch_size = BATCH
  config.model.width_multiplier = 0.125
  config.model.conv_impl = 'conv3d'
  config.data.image_size = SIZE
  config.objective.segment_frames = SEGMENT
  config.objective.queue_size = 24
  config.objective.head_hidden_dim = 16
  config.objective.head_output_dim = 8
  config.objective.predictor_hidden_dim = 16
  for key, value in objective.items():
    config.objective[key] = value
  return config


def test_configs_follow_the_recipe():
  config = config_lib.load_config_file('cep_r3d18_k400')
  oc = config.objective
  assert (oc.segment_frames, oc.window_stride, config.data.image_size) == (16, 1, 224)
  assert (oc.temperature, oc.queue_size, oc.momentum) == (0.07, 16_384, 0.99)
  assert (oc.head_output_dim, oc.predictor_hidden_dim, config.model.depth) == (2048, 4096, 18)
  assert (oc.appearance_weight, oc.prediction_weight, oc.cycle_weight) == (1.0, 1.0, 0.1)
  assert (config.optim.base_lr, config.optim.base_batch_size, config.num_epochs) == (0.01, 64, 50)
  assert (config.optim.weight_decay, config.optim.momentum) == (1e-4, 0.9)
  objective = build_objective(config)
  assert objective.plan.sampler == 'same_start' and objective.plan.clip_shape == (
      2, 48, 224, 224, 3)
  assert objective.plan.views[0].crop_area_range == (0.4, 1.0)
  assert objective.plan.augment_policies == ('cep', 'cep')
  demo = build_objective(config_lib.load_config_file('cep_demo', '/data'))
  assert demo.plan.clip_shape == (2, 24, 32, 32, 3)  # 40-frame demo videos: 3 x 8 frames
  assert demo.plan.views[0].crop_area_range == (0.6, 1.0)
  with pytest.raises(ValueError, match='queue_size=4 is smaller than the 8 keys'):
    build_objective(tiny_config(queue_size=4))
  with pytest.raises(ValueError, match='cycle_weight must be >= 0'):
    build_objective(tiny_config(cycle_weight=-1.0))


def test_cosine_schedule_ends_at_the_final_fraction():
  config = config_lib.load_config_file('cep_r3d18_k400')
  schedule = optim.learning_rate_schedule(config.optim, 128, 10.0, 100)
  np.testing.assert_allclose(float(schedule(0)), 0.02, rtol=1e-6)  # 0.01 x 128 / 64
  np.testing.assert_allclose(float(schedule(100)), 0.02e-3, rtol=1e-5)
  np.testing.assert_allclose(float(schedule(50)), 0.02 * (1e-3 + (1 - 1e-3) * 0.5), rtol=1e-5)
  config.optim.final_lr_fraction = 1.5
  with pytest.raises(ValueError, match='final_lr_fraction must be in'):
    config_lib.validate(config)


def numpy_multi_positive(q, k, queue, tau):
  """Per row: one softmax over [q_p . k for every p] + [q_p . queue for every p]; the sum over
  positives of -log of their probabilities; mean over rows."""
  q, k, queue = unit(q), unit(k), unit(queue)
  total = []
  for n in range(len(q)):
    logits = np.concatenate([q[n] @ k[n]] + [queue @ qp for qp in q[n]]) / tau
    log_z = np.log(np.sum(np.exp(logits - logits.max()))) + logits.max()
    total.append(sum(log_z - logits[p] for p in range(q.shape[1])))
  return np.mean(total)


def test_multi_positive_loss_matches_numpy():
  rng = np.random.default_rng(0)
  q = rng.normal(size=(5, 3, 6))
  k = rng.normal(size=(5, 6))
  queue = unit(rng.normal(size=(7, 6)))
  loss, metrics = losses.multi_positive_moco_loss(
      jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32), jnp.asarray(queue, jnp.float32),
      0.2)
  np.testing.assert_allclose(float(loss), numpy_multi_positive(q, k, queue, 0.2), rtol=1e-5)
  hits = [(unit(q[n, p]) @ unit(k[n])) > (queue @ unit(q[n, p])).max()
          for n in range(5) for p in range(3)]
  np.testing.assert_allclose(float(metrics['moco_accuracy']), np.mean(hits))
  # One positive: MoCo's InfoNCE over the same logits (the last queue row as every row's own).
  one, _ = losses.multi_positive_moco_loss(jnp.asarray(q[:, :1], jnp.float32),
                                           jnp.asarray(k, jnp.float32), jnp.asarray(queue), 0.2)
  single, _ = losses.moco_loss_with_negatives(
      jnp.asarray(q[:, 0], jnp.float32), jnp.asarray(k, jnp.float32), jnp.asarray(queue[:-1]),
      jnp.asarray(np.tile(queue[-1], (5, 1, 1))), 0.2)
  np.testing.assert_allclose(float(one), float(single), rtol=1e-6)
  # The keys and the queue get no gradient.
  grads = jax.grad(lambda k, qu: losses.multi_positive_moco_loss(
      jnp.asarray(q, jnp.float32), k, qu, 0.2)[0], argnums=(0, 1))(
          jnp.asarray(k, jnp.float32), jnp.asarray(queue, jnp.float32))
  assert all(float(jnp.abs(g).max()) == 0.0 for g in grads)
  with pytest.raises(ValueError, match='queries must be'):
    losses.multi_positive_moco_loss(jnp.zeros((5, 6)), jnp.zeros((5, 6)), jnp.zeros((7, 6)))


def test_multi_positive_loss_on_one_device_equals_eight_sharded_devices():
  assert jax.device_count() == 8
  rng = np.random.default_rng(5)
  q = jnp.asarray(rng.normal(size=(16, 3, 8)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)
  queue = jnp.asarray(unit(rng.normal(size=(12, 8))), jnp.float32)
  fn = jax.jit(lambda q, k, queue: losses.multi_positive_moco_loss(q, k, queue, 0.07))
  one = jax.devices()[0]
  single = fn(jax.device_put(q, one), jax.device_put(k, one), jax.device_put(queue, one))
  mesh = Mesh(np.array(jax.devices()), ('data',))
  rows, replicated = NamedSharding(mesh, P('data')), NamedSharding(mesh, P())
  sharded = fn(jax.device_put(q, rows), jax.device_put(k, rows), jax.device_put(queue, replicated))
  np.testing.assert_allclose(float(sharded[0]), float(single[0]), rtol=1e-6)
  np.testing.assert_allclose(float(sharded[1]['moco_accuracy']),
                             float(single[1]['moco_accuracy']))


def test_sparse_key_frames_are_sorted_distinct_and_drawn_per_key():
  keys = jax.random.split(jax.random.key(0), 600)
  indices = np.asarray(cep.sparse_frame_indices(keys, 48, 16))
  assert indices.shape == (600, 16) and indices.min() >= 0 and indices.max() < 48
  assert (np.diff(indices, axis=1) > 0).all()  # sorted, hence distinct
  again = np.asarray(cep.sparse_frame_indices(keys, 48, 16))
  np.testing.assert_array_equal(indices, again)  # a function of the key
  assert len({tuple(row) for row in indices}) == 600
  # Each frame in a third of the draws (5 binomial standard errors).
  counts = np.bincount(indices.ravel(), minlength=48) / 600
  assert np.abs(counts - 1 / 3).max() < 5 * np.sqrt(1 / 3 * 2 / 3 / 600)
  with pytest.raises(ValueError, match='cannot choose 17 distinct frames of a 16-frame'):
    cep.sparse_frame_indices(keys, 16, 17)

  # The objective cuts the key view's segments and gathers exactly those frames.
  objective = build_objective(tiny_config())
  frames = np.arange(WINDOW, dtype=np.float32)[None, None, :, None, None, None]
  clips = jnp.asarray(np.broadcast_to(frames, (BATCH, 2, WINDOW, 2, 2, 3)) + np.arange(
      BATCH)[:, None, None, None, None, None] * 100)
  example_keys = jax.random.split(jax.random.key(4), BATCH)
  got = np.asarray(objective.key_clips({'clips': clips, 'keys': example_keys}))[..., 0, 0, 0]
  chosen = np.asarray(cep.sparse_frame_indices(example_keys, WINDOW, SEGMENT))
  offsets = np.arange(BATCH)[:, None] * 100
  np.testing.assert_array_equal(got[:, :3], np.arange(WINDOW).reshape(1, 3, SEGMENT) + offsets[
      :, :, None])
  np.testing.assert_array_equal(got[:, 3], chosen + offsets)


@pytest.fixture(scope='module')
def tiny():
  objective = build_objective(tiny_config())
  rng = np.random.default_rng(1)
  clips = jnp.asarray(rng.uniform(size=(BATCH, 2, WINDOW, SIZE, SIZE, 3)).astype(np.float32))
  params, batch_stats, aux = jax.jit(objective.init)(jax.random.key(0), clips)
  return objective, clips, params, batch_stats, aux


def _cos_loss(x, y):
  return np.mean(2.0 - 2.0 * np.sum(unit(x) * unit(y), axis=-1))


def test_loss_matches_a_hand_written_reference(tiny):
  objective, clips, params, batch_stats, aux = tiny
  inputs = {'clips': clips, 'keys': jax.random.split(jax.random.key(3), BATCH)}
  variables = {'params': params, 'batch_stats': batch_stats}

  def fn(params, batch_stats, aux, inputs):
    loss_fn = lambda p: objective.loss(p, batch_stats, aux, inputs, jax.random.key(2),
                                       jnp.int32(0))
    out, grads = loss_fn(params), jax.grad(lambda p: loss_fn(p).loss)(params)
    segments = base.merge_views(objective.query_segments(inputs['clips']))
    (_, a, c), _ = objective.network.apply(variables, segments, train=True,
                                           mutable=['batch_stats'])
    (_, ka, kc), _ = objective.network.apply(aux['target'], base.merge_views(
        objective.key_clips(inputs)), train=True, mutable=['batch_stats'])
    return dataclasses.asdict(out), grads, a, c, ka, kc
  out, grads, a, c, ka, kc = jax.jit(fn)(params, batch_stats, aux, inputs)

  def predictor(name):
    apply = jax.jit(lambda z: objective.network.apply(
        variables, z, method=lambda m, z: getattr(m, name)(z, train=True),
        mutable=['batch_stats'])[0])
    return lambda z: np.asarray(apply(jnp.asarray(z, jnp.float32)), np.float64)
  fwd, bwd = predictor('forward_predictor'), predictor('backward_predictor')
  a = np.asarray(a, np.float64).reshape(BATCH, 3, -1)
  c = np.asarray(c, np.float32).reshape(BATCH, 3, -1)
  ka = np.asarray(ka, np.float64).reshape(BATCH, 4, -1)[:, 3]
  kc = np.asarray(kc, np.float64).reshape(BATCH, 4, -1)[:, :3]
  p, cur, f = c[:, 0], c[:, 1], c[:, 2]
  # (prediction, target): forward p->c, c->f; backward f->c, c->p; two steps p->f, f->p.
  predictions = [(fwd(p), kc[:, 1]), (fwd(cur), kc[:, 2]), (bwd(f), kc[:, 1]),
                 (bwd(cur), kc[:, 0]), (fwd(fwd(p)), kc[:, 2]), (bwd(bwd(f)), kc[:, 0])]
  cycles = [(bwd(fwd(p)), p), (bwd(fwd(cur)), cur), (fwd(bwd(cur)), cur), (fwd(bwd(f)), f),
            (bwd(bwd(fwd(fwd(p)))), p), (fwd(fwd(bwd(bwd(f)))), f)]
  appearance = numpy_multi_positive(a, ka, np.asarray(aux['queue'], np.float64), 0.07)
  prediction = np.mean([_cos_loss(x, y) for x, y in predictions])
  cycle = np.mean([_cos_loss(x, y) for x, y in cycles])
  metrics = out['metrics']
  np.testing.assert_allclose(float(metrics['appearance_loss']), appearance, rtol=1e-4)
  np.testing.assert_allclose(float(metrics['prediction_loss']), prediction, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(metrics['cycle_loss']), cycle, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(out['loss']), appearance + prediction + 0.1 * cycle,
                             rtol=1e-4)
  # The sparse key's momentum A embeddings are enqueued.
  np.testing.assert_allclose(np.asarray(out['aux']['queue'][:BATCH]), unit(ka), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(out['aux']['queue'][BATCH:]),
                                np.asarray(aux['queue'][BATCH:]))
  assert int(out['aux']['queue_ptr']) == BATCH
  # Every part of the online network gets a gradient (the momentum encoder is not trained).
  for name in ('backbone', 'appearance', 'cycle', 'forward_predictor', 'backward_predictor'):
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads[name])) > 0, name


def test_update_aux_is_a_constant_momentum_ema_of_the_encoder(tiny):
  objective, _, params, _, aux = tiny
  assert sorted(aux['target']['params']) == ['appearance', 'backbone', 'cycle']
  moved = jax.tree.map(lambda x: x + 1.0, params)
  new = objective.update_aux(moved, aux, jnp.int32(5))
  online = {k: params[k] for k in cep.ENCODER_KEYS}
  for t, o, m in zip(jax.tree.leaves(aux['target']['params']), jax.tree.leaves(online),
                     jax.tree.leaves(new['target']['params'])):
    np.testing.assert_allclose(np.asarray(m), 0.99 * np.asarray(t) + 0.01 * (np.asarray(o) + 1),
                               rtol=1e-6, atol=1e-6)


def _windows(rng):
  """Two views of one window: the same smooth video with independent pixel noise."""
  start = rng.uniform(0.0, 1.0, (BATCH, 1, 1, SIZE, SIZE, 3))
  end = rng.uniform(0.0, 1.0, (BATCH, 1, 1, SIZE, SIZE, 3))
  t = np.linspace(0.0, 1.0, WINDOW)[None, None, :, None, None, None]
  video = (1 - t) * start + t * end
  noise = rng.normal(0.0, 0.03, (BATCH, 2, WINDOW, SIZE, SIZE, 3))
  return jnp.asarray(np.clip(video + noise, 0, 1).astype(np.float32))


def test_a_short_run_lowers_the_loss_below_the_untrained_network():
  """Twelve steps on new videos, with Adam and at learning rate 0 (same queue and EMA
  dynamics): training must end with the lower loss."""
  objective = build_objective(tiny_config(momentum=0.5))
  params0, batch_stats0, aux0 = jax.jit(objective.init)(
      jax.random.key(0), _windows(np.random.default_rng(2)))
  trained, frozen = lib.lr_scaled_losses(objective, (params0, batch_stats0, aux0), _windows, BATCH)
  assert trained[0] == pytest.approx(frozen[0], rel=1e-6)
  assert np.mean(trained[-4:]) < np.mean(frozen[-4:]) - 0.3, (trained, frozen)


def test_resume_restores_key_encoder_and_queue(env, tmp_path_factory):  # noqa: F811
  extra = {'objective.queue_size': 24, 'objective.segment_frames': SEGMENT,
           'objective.head_hidden_dim': 16, 'objective.head_output_dim': 16,
           'objective.predictor_hidden_dim': 16}
  uninterrupted = str(tmp_path_factory.mktemp('cep_uninterrupted'))
  results = trainer.pretrain(_config(env.data, 'cep_demo', **extra), uninterrupted)
  assert results['step'] == lib.NUM_STEPS
  parts = lib.read_scalars(uninterrupted, 'train/cycle_loss')
  assert len(parts) == lib.NUM_STEPS and min(parts.values()) > 0

  resumed = str(tmp_path_factory.mktemp('cep_resumed'))
  final = lib.resume_matches_uninterrupted(_config(env.data, 'cep_demo', **extra), uninterrupted, resumed,
                                           ('queue', 'queue_ptr', 'target'))
  assert int(final[0]['queue_ptr']) == lib.NUM_STEPS * 16 % 24
