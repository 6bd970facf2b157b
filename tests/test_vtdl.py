"""VTDL (docs/recipes/temporal.md): its sampler, TCA, the loss against NumPy, the EMA, a short run."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from cvrl_jax import config_lib
from cvrl_jax import augment
from cvrl_jax.data import sampling
from cvrl_jax.objectives import base
from cvrl_jax.objectives import build_objective
from rho_numpy import unit
import train_testlib as lib

BATCH, FRAMES, SIZE = 8, 4, 16


def tiny_config(**objective):
  config = config_lib.load_config_file('vtdl_demo', '/nowhere')
  config.batch_size = BATCH
  config.model.width_multiplier = 0.125
  config.model.conv_impl = 'conv3d'
  config.data.num_frames = FRAMES
  config.data.image_size = SIZE
  config.objective.queue_size = 24
  config.objective.head_output_dim = 8
  for key, value in objective.items():
    config.objective[key] = value
  return config


def test_configs_follow_the_recipe():
  config = config_lib.load_config_file('vtdl_r3d18_ucf101')
  oc = config.objective
  assert (config.data.num_frames, config.data.frame_stride, config.data.image_size) == (16, 4, 224)
  assert (oc.temperature, oc.queue_size, oc.momentum, oc.head_output_dim) == (0.07, 5000, 0.999, 128)
  assert (oc.tca_max_lambda, oc.min_distance, config.num_epochs) == (0.1, 2, 240)
  assert (config.optim.base_lr, config.optim.weight_decay, config.optim.momentum) == (
      0.003, 1e-4, 0.9)
  objective = build_objective(config)
  assert objective.plan.sampler == 'temporal_negative' and objective.plan.num_views == 3
  assert objective.plan.host_fields == ('view_starts',)
  assert objective.plan.views[0].crop_area_range == (0.766, 0.766)
  demo = build_objective(config_lib.load_config_file('vtdl_demo', '/data'))
  assert demo.plan.views[0].crop_area_range == (0.6, 1.0)
  with pytest.raises(ValueError, match='tca_max_lambda must be in'):
    build_objective(tiny_config(tca_max_lambda=1.5))
  with pytest.raises(ValueError, match='queue_size=4 is smaller than the 8 keys'):
    build_objective(tiny_config(queue_size=4))


def test_temporal_negative_sampler_shares_the_anchor_start_and_keeps_the_negative_apart():
  length, clip_len, stride = 60, 4, 2
  positions = length - (clip_len - 1) * stride  # 54 starts whose clip fits
  seeds = tf.stack([tf.range(2000, dtype=tf.int64), tf.zeros([2000], tf.int64)], axis=1)
  starts = next(tf.data.Dataset.from_tensor_slices(seeds).map(
      lambda s: sampling.SAMPLERS['temporal_negative'].starts(
          s, tf.constant(length), 3, clip_len, stride, {'min_distance': 2})).batch(2000)
      .as_numpy_iterator())
  np.testing.assert_array_equal(starts[:, 0], starts[:, 1])
  assert starts.min() >= 0 and starts.max() < positions
  assert np.abs(starts[:, 2] - starts[:, 0]).min() > 2
  # Moved negatives exist (about 5/54 of the draws) and every start is reachable.
  assert len(np.unique(starts[:, 2])) == positions and len(np.unique(starts[:, 0])) == positions
  with pytest.raises(ValueError, match="'temporal_negative' sampler's min_distance must be"):
    sampling.SAMPLERS['temporal_negative'].check(3, 4, 2, {'min_distance': -1})


def test_tca_scales_the_temporal_differences_by_one_minus_lambda():
  rng = np.random.default_rng(0)
  clip = rng.uniform(size=(6, 5, 5, 3)).astype(np.float32)
  seen = set()
  for i in range(20):
    out = np.asarray(augment.random_tca(jax.random.key(i), jnp.asarray(clip), 0.1), np.float64)
    ratio = np.diff(out, axis=0) / np.diff(clip.astype(np.float64), axis=0)
    lam = 1.0 - ratio.mean()
    assert 0.0 <= lam <= 0.1
    np.testing.assert_allclose(ratio, 1.0 - lam, atol=2e-4)
    # The rest is lam times one frame of the clip.
    mixed = (out - (1.0 - lam) * clip) / max(lam, 1e-9)
    s = int(np.argmin([np.abs(mixed[0] - frame).max() for frame in clip]))
    np.testing.assert_allclose(out, (1 - lam) * clip + lam * clip[s][None], atol=1e-5)
    seen.add(s)
  assert len(seen) > 2  # the frame is drawn, not fixed
  # tca_mix is the formula, exactly.
  np.testing.assert_allclose(np.asarray(augment.tca_mix(jnp.asarray(clip), 0.25, 3)),
                             0.75 * clip + 0.25 * clip[3][None], rtol=1e-6)


def numpy_vtdl(q, k, queue, n, tau):
  q, k, queue, n = unit(q), unit(k), unit(queue), unit(n)
  losses = []
  for i in range(len(q)):
    logits = np.concatenate([[q[i] @ k[i]], queue @ q[i], [q[i] @ n[i]]]) / tau
    losses.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[0])
  return np.mean(losses)


@pytest.fixture(scope='module')
def vtdl():
  objective = build_objective(tiny_config(tca_max_lambda=0.0))
  rng = np.random.default_rng(1)
  clips = jnp.asarray(rng.uniform(size=(BATCH, 3, FRAMES, SIZE, SIZE, 3)).astype(np.float32))
  params, batch_stats, aux = jax.jit(objective.init)(jax.random.key(0), clips)
  return objective, clips, params, batch_stats, aux


def test_loss_matches_numpy_and_enqueues_the_positive_keys(vtdl):
  objective, clips, params, batch_stats, aux = vtdl
  starts = jnp.asarray(np.tile([[5, 5, 25]], (BATCH, 1)).astype(np.int32))
  inputs = {'clips': clips, 'keys': jax.random.split(jax.random.key(3), BATCH),
            'view_starts': starts}

  def fn(params, batch_stats, aux, inputs):
    out = objective.loss(params, batch_stats, aux, inputs, jax.random.key(2), jnp.int32(0))
    online = jnp.stack([clips[:, 0], clips[:, 2]], axis=1)
    (_, z), _ = objective.network.apply({'params': params, 'batch_stats': batch_stats},
                                        base.merge_views(online), train=True,
                                        mutable=['batch_stats'])
    (_, zk), _ = objective.network.apply(aux['target'], clips[:, 1], train=True,
                                         mutable=['batch_stats'])
    return dataclasses.asdict(out), z, zk
  out, z, zk = jax.jit(fn)(params, batch_stats, aux, inputs)
  z = np.asarray(z, np.float64).reshape(BATCH, 2, -1)
  zk = np.asarray(zk, np.float64)
  expected = numpy_vtdl(z[:, 0], zk, np.asarray(aux['queue'], np.float64), z[:, 1], 0.07)
  np.testing.assert_allclose(float(out['loss']), expected, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(out['aux']['queue'][:BATCH]), unit(zk), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(out['aux']['queue'][BATCH:]),
                                np.asarray(aux['queue'][BATCH:]))
  assert int(out['aux']['queue_ptr']) == BATCH
  assert float(out['metrics']['temporal_negative_distance']) == 20.0
  # The temporal negative has gradient; the key encoder has none.
  grads = jax.jit(jax.grad(lambda p: objective.loss(
      p, batch_stats, aux, inputs, jax.random.key(2), jnp.int32(0)).loss))(params)
  assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads)) > 0


def test_update_aux_is_a_constant_momentum_ema(vtdl):
  objective, _, params, _, aux = vtdl
  moved = jax.tree.map(lambda x: x + 1.0, params)
  new = objective.update_aux(moved, aux, jnp.int32(5))
  for t, o, m in zip(jax.tree.leaves(aux['target']['params']), jax.tree.leaves(params),
                     jax.tree.leaves(new['target']['params'])):
    np.testing.assert_allclose(np.asarray(m), 0.999 * np.asarray(t) + 0.001 * (np.asarray(o) + 1),
                               rtol=1e-6, atol=1e-6)


def _videos(rng):
  """Anchor and positive: one clip with independent pixel noise; the temporal negative: the
  same video at another time (a different brightness and pattern)."""
  base = rng.uniform(0.0, 1.0, (BATCH, 1, FRAMES, SIZE, SIZE, 3))
  other = rng.uniform(0.0, 1.0, (BATCH, 1, FRAMES, SIZE, SIZE, 3))
  noise = rng.normal(0.0, 0.03, (BATCH, 2, FRAMES, SIZE, SIZE, 3))
  clips = np.concatenate([base + noise, 0.5 * base + 0.5 * other], axis=1)
  return jnp.asarray(np.clip(clips, 0, 1).astype(np.float32))


def test_a_short_run_lowers_the_loss_below_the_untrained_network():
  """24 steps on a stream of new videos, once with Adam and once at learning rate 0 (same queue
  and EMA dynamics): the second half's mean loss must be lower when training. (The loss of one
  run is not monotone and swings by 2x between batches: the queue starts as random unit vectors
  and fills with real, similar keys; 12 steps and the last 4 left too small a margin, 0.14 on
  one VM.)"""
  # A key encoder that follows within the run (at 0.999 it stays the initial network for 12
  # steps, and any update of the online one moves the queries away from their keys).
  objective = build_objective(tiny_config(momentum=0.5))
  init_rng = np.random.default_rng(2)
  params0, batch_stats0, aux0 = jax.jit(objective.init)(jax.random.key(0), _videos(init_rng))
  trained, frozen = lib.lr_scaled_losses(objective, (params0, batch_stats0, aux0), _videos, BATCH,
                                         num_steps=24)
  assert trained[0] == pytest.approx(frozen[0], rel=1e-6)
  assert np.mean(trained[12:]) < np.mean(frozen[12:]) - 0.3, (trained, frozen)


def test_pipeline_cuts_anchor_and_positive_at_one_start_and_the_negative_elsewhere(tmp_path):
  from cvrl_jax.data import dmvr  # pylint: disable=g-import-not-at-top
  from cvrl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from test_plan import _flat_video  # frame i is flat grey 10 + 2 i
  lengths = (30, 41, 52, 63)
  path = str(tmp_path / 'train.tfrecord')
  dmvr.write_shard(path, [dmvr.make_sequence_example(_flat_video(n), v, data_path=f'v{v}')
                          for v, n in enumerate(lengths)])
  config = tiny_config()
  config.data.train_files = path
  config.data.frame_stride = 2
  config.data.image_size = 8
  config.data.shuffle_buffer = 4
  config.data.host_split = 'records'
  plan = build_objective(config).plan
  iterator = pipeline.make_pretrain_iterator(config.data, plan, global_batch_size=8, seed=0,
                                             process_index=0, process_count=1)
  batch = next(iterator)
  assert batch['video'].shape == (8, 3, FRAMES, 8, 8, 3)
  starts = batch['view_starts']
  np.testing.assert_array_equal(starts[:, 0], starts[:, 1])
  assert (np.abs(starts[:, 2] - starts[:, 0]) > 2).all()
  frames = np.rint((batch['video'].reshape(8, 3, FRAMES, -1).mean(-1) - 10) / 2).astype(int)
  lengths = np.array(lengths)[batch['label']]
  expected = (starts[..., None] + 2 * np.arange(FRAMES)) % lengths[:, None, None]
  np.testing.assert_array_equal(frames, expected)
