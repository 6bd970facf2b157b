"""The rho-family objectives on a tiny network: configs against the spec, each loss wired as the
NumPy references compute it from the network's outputs, momentum updates, the queue, the frozen
prototypes, and the shuffle-BN argument.

Parameters are filled from NumPy (jax.eval_shape gives their structure), so no initialiser is
compiled; each test compiles one forward pass of R3D-18 at 1/8 width on 2 frames of 16 x 16.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from cvrl_jax import config_lib
from cvrl_jax import sharding
from cvrl_jax.objectives import base
from cvrl_jax.objectives import build_objective
import rho_testlib
from rho_numpy import numpy_byol, numpy_moco, numpy_simclr, numpy_swav, unit

BATCH, RHO, FRAMES, SIZE = 8, 3, 2, 16
TOTAL_STEPS, STEPS_PER_EPOCH = 100, 10.0


def tiny_config(method, rho=RHO):
  config = rho_testlib.with_method(config_lib.base_config(), method)
  config.batch_size = BATCH
  config.model.depth = 18
  config.model.width_multiplier = 0.125
  config.model.dtype = 'float32'
  config.model.conv_impl = 'conv3d'  # compiles faster on CPU than the default there, 'factorized'
  config.model.stem_temporal_kernel = 1
  config.model.stem_temporal_stride = 1
  config.data.num_frames = FRAMES
  config.data.image_size = SIZE
  objective = config.objective
  objective.rho = rho
  objective.head_hidden_dim = 16
  objective.head_output_dim = 8
  if method == 'rho_byol':
    objective.predictor_hidden_dim = 16
  if method == 'rho_moco':
    objective.queue_size = 40
  if method == 'rho_swav':
    objective.num_prototypes = 10
  return config


def _fill(abstract, rng):
  """NumPy values for an abstract variable tree: kernels ~ N(0, 1/fan_in), BN near identity."""
  def leaf(path, x):
    name = path[-1].key
    if name == 'kernel':
      return (rng.normal(size=x.shape) / math.sqrt(np.prod(x.shape[:-1]))).astype(x.dtype)
    if name == 'var':
      return np.ones(x.shape, x.dtype)
    if name == 'scale':
      return (1.0 + 0.1 * rng.normal(size=x.shape)).astype(x.dtype)
    return (0.1 * rng.normal(size=x.shape)).astype(x.dtype)  # biases, BN offsets and means
  return jax.tree_util.tree_map_with_path(leaf, abstract)


def make(method, rho=RHO, seed=0):
  """(objective, clips [B, rho, T, H, W, 3], params, batch_stats, aux) without compiling init."""
  objective = build_objective(tiny_config(method, rho))
  objective.set_training_length(TOTAL_STEPS, STEPS_PER_EPOCH)
  rng = np.random.default_rng(seed)
  clips = rng.uniform(size=(BATCH, rho, FRAMES, SIZE, SIZE, 3)).astype(np.float32)
  abstract_params, abstract_stats, _ = jax.eval_shape(objective.init, jax.random.key(0), clips)
  params, batch_stats = _fill(abstract_params, rng), _fill(abstract_stats, rng)
  aux = jax.jit(objective.init_aux)(jax.random.key(1), params, batch_stats, clips)
  return objective, clips, params, batch_stats, aux


def run_loss(objective, params, batch_stats, aux, clips, step=0):
  """The objective's LossOutput (as a dict) and, from the same compiled program, the online
  network's outputs on the clips in merge_views order."""
  def fn(params, batch_stats, aux, clips, step):
    out = objective.loss(params, batch_stats, aux, {'clips': clips}, jax.random.key(2), step)
    outputs, _ = objective.network.apply({'params': params, 'batch_stats': batch_stats},
                                         base.merge_views(clips), train=True,
                                         mutable=['batch_stats'])
    return dataclasses.asdict(out), outputs
  return jax.jit(fn)(params, batch_stats, aux, clips, jnp.int32(step))


def stacked(x, rho=RHO):
  """[B*rho, ...] network outputs (merge_views order) -> [rho, B, ...] float64."""
  return np.swapaxes(np.asarray(x, np.float64).reshape((-1, rho) + x.shape[1:]), 0, 1)


# ------------------------------------------------------------------------------------------------
# Configs and specs (no compilation).
# ------------------------------------------------------------------------------------------------
def test_paper_configs_follow_the_spec_table():
  expected = {  # ../shared/spec/rho-family.md
      'rho_moco': dict(rho=4, temperature=0.1, hidden=2048, layers=2, out=128, bn=False,
                       optim='sgd', lr=0.4, wd=1e-4),
      'rho_byol': dict(rho=2, temperature=0.5, hidden=4096, layers=1, out=256, bn=True,
                       optim='lars', lr=4.8, wd=1e-6),
      'rho_simclr': dict(rho=4, temperature=0.1, hidden=2048, layers=2, out=128, bn=True,
                         optim='lars', lr=4.8, wd=1e-6),
      'rho_swav': dict(rho=2, temperature=0.1, hidden=2048, layers=2, out=128, bn=True,
                       optim='lars', lr=4.8, wd=1e-6),
  }
  for method, e in expected.items():
    c = rho_testlib.paper_config(method)
    o = c.objective
    assert (o.name, o.rho, o.temperature) == (method, e['rho'], e['temperature'])
    assert (o.head_hidden_dim, o.head_num_layers, o.head_output_dim, o.head_use_bn) == (
        e['hidden'], e['layers'], e['out'], e['bn'])
    assert (c.optim.name, c.optim.base_lr, c.optim.weight_decay) == (e['optim'], e['lr'], e['wd'])
    assert c.optim.base_batch_size == c.batch_size == 512
    assert (c.optim.momentum, c.optim.lars_trust_coefficient) == (0.9, 0.001)
    assert (c.num_epochs, c.optim.warmup_epochs, c.optim.schedule) == (200, 35.0, 'cosine')
    assert (c.model.depth, c.model.stem_temporal_kernel, c.model.stem_temporal_stride) == (50, 1, 1)
    assert (c.data.num_frames, c.data.frame_stride) == (8, 8)
    with pytest.raises(AttributeError):
      c.objective.temprature = 0.2  # locked: a misspelt override fails
  assert rho_testlib.paper_config('rho_moco').objective.base_momentum == 0.994
  assert rho_testlib.paper_config('rho_moco').objective.queue_size == 65_536
  assert rho_testlib.paper_config('rho_byol').objective.base_momentum == 0.996
  byol = rho_testlib.paper_config('rho_byol').objective
  assert (byol.predictor_hidden_dim, byol.predictor_num_layers) == (4096, 1)
  swav = rho_testlib.paper_config('rho_swav').objective
  assert (swav.num_prototypes, swav.sinkhorn_epsilon, swav.sinkhorn_iters,
          swav.freeze_prototypes_epochs) == (1000, 0.05, 3, 1.0)


def test_demo_configs_share_the_cvrl_demo_budget():
  cvrl = config_lib.load_config_file('demo', '/data')
  for method in rho_testlib.METHODS:
    c = rho_testlib.demo_config(method, '/data')
    for key in ('batch_size', 'num_epochs', 'seed', 'data', 'model'):
      assert c[key] == cvrl[key], (method, key)
    assert c.objective.rho == 2 and c.optim.base_batch_size == c.batch_size


def test_specs_and_bad_values():
  for method in rho_testlib.METHODS:
    objective = build_objective(tiny_config(method, rho=3))
    plan = objective.plan
    assert (plan.num_views, plan.sampler, plan.augment_policies) == (3, 'rho', ('aug_plus',) * 3)
    assert plan.ordering == 'unordered'
    for view in plan.views:
      assert view.crop_area_range == (0.2, 0.766) and view.crop_aspect_range == (0.75, 1.333)
    # rho = 1: two views of the same frames (the paper's ablation without temporal persistence).
    plan = build_objective(tiny_config(method, rho=1)).plan
    assert (plan.num_views, plan.sampler, plan.ordering) == (2, 'same_start', 'same_start')
    with pytest.raises(ValueError, match='at least 1'):
      build_objective(tiny_config(method, rho=0))
  config = tiny_config('rho_swav')
  config.objective.num_prototypes = 9  # not more than 8 output dimensions + 1
  with pytest.raises(ValueError, match='must exceed head_output_dim'):
    build_objective(config)
  config = tiny_config('rho_simclr')
  config.objective.pairing = 'random'
  with pytest.raises(ValueError, match='pairing'):
    build_objective(config)
  objective = build_objective(tiny_config('rho_moco'))
  with pytest.raises(ValueError, match='set_training_length'):
    objective.update_aux({}, {}, 0)
  config = tiny_config('rho_moco')
  config.batch_size = 16  # 3 clips x 16 videos = 48 keys a step > 40 rows
  with pytest.raises(ValueError, match='queue_size=40 is smaller than the 48 keys'):
    build_objective(config)


# ------------------------------------------------------------------------------------------------
# Losses wired to the network outputs, momentum targets, queue, prototypes.
# ------------------------------------------------------------------------------------------------
def test_rho_simclr_objective():
  objective, clips, params, batch_stats, aux = make('rho_simclr')
  objective.pairing = 'all'
  out, (_, projections) = run_loss(objective, params, batch_stats, aux, clips)
  np.testing.assert_allclose(float(out['loss']), numpy_simclr(stacked(projections), 0.1, 'all'),
                             rtol=1e-4)
  assert set(out['batch_stats']) == {'backbone', 'projector'}


@pytest.fixture(scope='module')
def moco():
  return make('rho_moco')


def test_rho_moco_objective_step_and_momentum_update(moco):
  objective, clips, params, batch_stats, aux = moco
  queue0 = np.asarray(aux['queue'])
  out, (_, projections) = run_loss(objective, params, batch_stats, aux, clips, step=0)
  q = stacked(projections)
  # At step 0 the key encoder is a copy of the online one (BN in training mode on the same
  # clips), so every key equals its query.
  ref_loss, ref_acc = numpy_moco(q, q, queue0, 0.1)
  np.testing.assert_allclose(float(out['loss']), ref_loss, rtol=1e-4)
  np.testing.assert_allclose(float(out['metrics']['moco_accuracy']), ref_acc)
  assert float(out['metrics']['momentum']) == pytest.approx(0.994)
  # All rho keys are enqueued in merge_views order at the pointer; the rest is untouched.
  num_keys = RHO * BATCH
  new_queue = np.asarray(out['aux']['queue'])
  np.testing.assert_allclose(new_queue[:num_keys],
                             unit(np.swapaxes(q, 0, 1).reshape(num_keys, -1)), atol=1e-5)
  np.testing.assert_array_equal(new_queue[num_keys:], queue0[num_keys:])
  assert int(out['aux']['queue_ptr']) == num_keys
  # The key encoder's BN statistics advance by its own forward pass, like the online ones.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               out['aux']['target']['batch_stats'], out['batch_stats'])

  # update_aux after the update of step 7: target = m(8) target + (1 - m(8)) online.
  rng = np.random.default_rng(3)
  new_params = jax.tree.map(lambda x: x + rng.normal(size=x.shape).astype(x.dtype), params)
  updated = jax.jit(objective.update_aux)(new_params, out['aux'], jnp.int32(7))
  m = 1 - (1 - 0.994) * (math.cos(math.pi * 8 / TOTAL_STEPS) + 1) / 2
  jax.tree.map(lambda t, old, new: np.testing.assert_allclose(t, m * old + (1 - m) * new,
                                                              rtol=1e-5, atol=1e-6),
               updated['target']['params'], out['aux']['target']['params'], new_params)
  np.testing.assert_array_equal(updated['queue'], out['aux']['queue'])
  jax.tree.map(np.testing.assert_array_equal, updated['target']['batch_stats'],
               out['aux']['target']['batch_stats'])


def test_global_batch_norm_makes_shuffle_bn_moot(moco):
  """Permuting the key encoder's (global) batch permutes its keys and changes nothing else."""
  objective, clips, _, _, aux = moco
  merged = base.merge_views(clips)
  keys = jax.jit(lambda t, x: objective.target.apply(t, x)[0][1])
  perm = np.random.default_rng(4).permutation(len(merged))
  np.testing.assert_allclose(keys(aux['target'], merged[perm]), keys(aux['target'], merged)[perm],
                             rtol=1e-4, atol=2e-5)


def test_rho_moco_queue_layout():
  mesh = jax.make_mesh((4, 2), sharding.AXES, axis_types=(AxisType.Auto,) * 2)
  objective = build_objective(tiny_config('rho_moco'))
  default = {'queue': NamedSharding(mesh, P()), 'queue_ptr': NamedSharding(mesh, P()),
             'target': {'params': NamedSharding(mesh, P())}}
  laid_out = objective.aux_shardings(default, mesh)
  assert laid_out['queue'].spec == P(('data', 'fsdp'))
  assert laid_out['queue_ptr'] is default['queue_ptr'] and laid_out['target'] is default['target']
  objective.queue_size = 36  # not a multiple of the 8 devices
  with pytest.raises(ValueError, match='multiple of the 8 devices'):
    objective.aux_shardings(default, mesh)
  objective.queue_sharding = 'replicated'
  assert objective.aux_shardings(default, mesh)['queue'].spec == P()


def test_rho_byol_objective_and_target_without_predictor():
  objective, clips, params, batch_stats, aux = make('rho_byol')
  assert set(aux['target']['params']) == {'backbone', 'projector'}  # no predictor
  out, (_, projections, predictions) = run_loss(objective, params, batch_stats, aux, clips)
  # At step 0 the target network is the online backbone + projector.
  np.testing.assert_allclose(float(out['loss']),
                             numpy_byol(stacked(predictions), stacked(projections), 0.5), rtol=1e-4)
  new_params = jax.tree.map(lambda x: 2.0 * x, params)
  updated = jax.jit(objective.update_aux)(new_params, aux, jnp.int32(TOTAL_STEPS - 1))
  # At the last step m = 1: the target stops moving.
  jax.tree.map(np.testing.assert_array_equal, updated['target']['params'], aux['target']['params'])


def test_rho_swav_objective_scores_and_frozen_prototypes():
  objective, clips, params, batch_stats, aux = make('rho_swav')
  out, (_, projections, scores) = run_loss(objective, params, batch_stats, aux, clips)
  prototypes = unit(np.asarray(params['prototypes']['kernel']).T)  # [K, D] unit rows
  np.testing.assert_allclose(scores, unit(projections) @ prototypes.T, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(out['loss']), numpy_swav(stacked(scores), 0.1, 'adjacent'),
                             rtol=1e-4)
  # Prototypes frozen for the first epoch (10 steps here), everything else always trains.
  for step, trains in ((0, False), (9, False), (10, True), (50, True)):
    mask = base.expand_mask(objective.trainable_mask(jnp.int32(step)), params)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    assert bool(mask['prototypes']['kernel']) is trains
    assert all(bool(m) for m in jax.tree.leaves(mask['backbone']))
