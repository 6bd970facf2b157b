"""The order-based pretext family: label spaces against itertools, the geometric transforms
against NumPy, the shared head's fusions, and VCOP (its configs against the recipe, its labels
and presentation order, its accuracy rising above chance, one trainer step with short videos).

Reference: ../shared/spec/pretext.md (recipes in docs/recipes/pretext.md).
"""
import io
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from cvrl_jax import config_lib
from cvrl_jax import sharding
from cvrl_jax import train_step
from cvrl_jax.data import dmvr
from cvrl_jax.data import pipeline
from cvrl_jax.objectives import build_objective
from cvrl_jax.objectives import pretext



# ------------------------------------------------------------------------------------------------
# Label spaces and transforms (no network).
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('n', [1, 2, 3, 4, 5, 6])
def test_all_orders_are_itertools_permutations_in_order(n):
  np.testing.assert_array_equal(pretext.all_orders(n),
                                np.array(list(itertools.permutations(range(n)))))


@pytest.mark.parametrize('n', [2, 3, 4, 5])
def test_orders_up_to_reversal_hold_each_order_or_its_reverse_once(n):
  table = [tuple(p) for p in pretext.orders_up_to_reversal(n)]
  assert len(table) == len(set(table)) == math.factorial(n) // 2
  for p in itertools.permutations(range(n)):
    assert (p in table) + (p[::-1] in table) == 1, p
  if n == 4:
    assert len(table) == 12  # OPN's classes


def test_transforms_are_distinct_match_numpy_and_are_undone_by_their_inverse():
  clip = np.random.default_rng(0).uniform(size=(2, 5, 5, 3)).astype(np.float32)
  outputs = []
  for t in range(pretext.NUM_TRANSFORMS):
    got = np.asarray(pretext.transform_clip(jnp.asarray(clip), jnp.int32(t)))
    want = np.rot90(clip, t % 4, axes=(1, 2))
    want = want[:, :, ::-1] if t >= 4 else want
    np.testing.assert_array_equal(got, want)
    back = pretext.transform_clip(jnp.asarray(got), jnp.int32(pretext.inverse_transform(t)))
    np.testing.assert_array_equal(np.asarray(back), clip)
    outputs.append(got.tobytes())
  assert len(set(outputs)) == 8
  with pytest.raises(ValueError, match='square frames'):
    pretext.transform_clip(jnp.zeros((2, 4, 5, 3)), jnp.int32(0))


def test_draws_are_uniform_and_permutations_reorder_the_elements():
  keys = jax.random.split(jax.random.key(3), 6000)
  classes = np.asarray(pretext.draw_classes(keys, 6))
  counts = np.bincount(classes, minlength=6)
  assert counts.min() > 900 and counts.max() < 1100  # 1000 each; 5 sigma is ~ +-130
  x = np.arange(4 * 3 * 2).reshape(4, 3, 2)
  perms = np.array([[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]])
  got = np.asarray(pretext.permute_elements(jnp.asarray(x), jnp.asarray(perms)))
  for b in range(4):
    for i in range(3):
      np.testing.assert_array_equal(got[b, i], x[b, perms[b, i]])


def test_head_fusions_against_numpy():
  f = np.random.default_rng(1).normal(size=(2, 4, 3)).astype(np.float32)
  for fusion in pretext.FUSIONS:
    head = pretext.OrderHead({'order': 5}, fusion=fusion, pair_dim=6)
    variables = head.init(jax.random.key(0), jnp.asarray(f), train=False)
    logits = np.asarray(head.apply(variables, jnp.asarray(f), train=False)['order'])
    p = jax.tree.map(np.asarray, variables['params'])
    if fusion == 'pairwise':
      pairs = [np.concatenate([f[:, i], f[:, j]], -1)
               for i, j in itertools.combinations(range(4), 2)]
      x = np.concatenate([np.maximum(q @ p['pair_dense']['kernel'] + p['pair_dense']['bias'], 0)
                          for q in pairs], -1)
    elif fusion == 'concat':
      x = f.reshape(2, -1)
    else:
      x = sum(f[:, j] - f[:, i] for i, j in itertools.combinations(range(4), 2))
    want = x @ p['order_logits']['kernel'] + p['order_logits']['bias']
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# VCOP.
# ------------------------------------------------------------------------------------------------
def test_vcop_configs_follow_the_recipe():
  config = config_lib.load_config_file('vcop_r3d_ucf101')
  objective = build_objective(config)
  plan = objective.plan
  assert (plan.sampler, plan.ordering, plan.sampler_params) == ('consecutive', 'ordered',
                                                                {'gap': 8})
  assert plan.clip_shape == (3, 16, 112, 112, 3) and plan.views[0].stride == 1
  assert plan.min_length == 64 and plan.short_videos == 'skip'
  assert plan.augment_policies == ('none',) * 3  # no flip, no colour
  assert plan.views[0].crop_area_range == pytest.approx((112**2 / (128 * 171),) * 2)
  assert len(objective.orders) == 6
  assert (config.batch_size, config.optim.base_lr, config.optim.schedule,
          config.optim.weight_decay, config.num_epochs) == (8, 1e-3, 'constant', 5e-4, 300)
  # The paper's R3D: one basic block per stage, no max-pool, stages 3-5 halve time and space.
  x = jax.ShapeDtypeStruct((2, 16, 112, 112, 3), jnp.float32)
  backbone = objective.network.backbone
  variables = jax.eval_shape(lambda x: backbone.init(jax.random.key(0), x, train=False), x)
  assert sorted(k for k in variables['params'] if k.startswith('stage')) == [
      'stage1_block1', 'stage2_block1', 'stage3_block1', 'stage4_block1']
  _, stages = jax.eval_shape(
      lambda v, x: backbone.apply(v, x, train=False, return_stages=True), variables, x)
  assert stages['stem'].shape[1:4] == (16, 56, 56)  # no max-pool
  assert [stages[f'stage{i}'].shape[1:4] for i in (1, 2, 3, 4)] == [
      (16, 56, 56), (8, 28, 28), (4, 14, 14), (2, 7, 7)]
  demo = build_objective(config_lib.load_config_file('vcop_demo', '/data'))
  assert demo.plan.min_length == 32 and demo.plan.views[0].crop_area_range == (1.0, 1.0)


def tiny_vcop(**objective):
  config = config_lib.load_config_file('vcop_demo', '/nowhere')
  config.batch_size = 16
  config.model.depth = 10
  config.model.width_multiplier = 0.125
  config.model.conv_impl = 'conv3d'
  config.data.num_frames = 2
  config.data.image_size = 16
  config.objective.clip_gap = 1
  config.objective.pair_dim = 16
  for key, value in objective.items():
    config.objective[key] = value
  return config


def _ramp_clips(rng, batch, num_clips=3, frames=2, size=16):
  """Clips cut in time order from videos that brighten over time (a random base and slope per
  video, noise per pixel): the order is visible in the clips' brightness."""
  base = rng.uniform(0.0, 0.4, (batch, 1, 1, 1, 1, 1))
  slope = rng.uniform(0.05, 0.1, (batch, 1, 1, 1, 1, 1))
  t = (np.arange(num_clips)[:, None] * (frames + 1) + np.arange(frames)[None])
  t = t.reshape(1, num_clips, frames, 1, 1, 1)
  noise = rng.uniform(-0.05, 0.05, (batch, num_clips, frames, size, size, 3))
  return np.clip(base + slope * t + noise, 0, 1).astype(np.float32)


def test_vcop_presents_the_clips_in_the_drawn_order_and_learns_it():
  objective = build_objective(tiny_vcop(dropout=0.0))
  rng = np.random.default_rng(0)
  clips = _ramp_clips(rng, 16)
  keys = jax.random.split(jax.random.key(5), 16)
  elements, labels = objective.task({'clips': jnp.asarray(clips), 'keys': keys})
  orders = list(itertools.permutations(range(3)))
  for b, c in enumerate(np.asarray(labels['order'])):
    for i in range(3):
      np.testing.assert_array_equal(np.asarray(elements[b, i]), clips[b, orders[c][i]])

  params, batch_stats, aux = objective.init(jax.random.key(0), jnp.asarray(clips))
  tx = optax.adam(3e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, batch_stats, opt_state, clips, keys, i):
    def loss_fn(p):
      out = objective.loss(p, batch_stats, aux, {'clips': clips, 'keys': keys},
                           jax.random.key(1), i)
      return out.loss, (out.batch_stats, out.metrics)
    (_, (batch_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, metrics

  accuracies = []
  for i in range(30):
    clips = _ramp_clips(rng, 16)
    keys = jax.random.split(jax.random.fold_in(jax.random.key(7), i), 16)
    params, batch_stats, opt_state, metrics = step(params, batch_stats, opt_state, clips, keys,
                                                   jnp.int32(i))
    accuracies.append(float(metrics['pretext_accuracy']))
  # Chance is 1/6; the last 10 batches are new videos and new orders, seen once each.
  assert np.mean(accuracies[:5]) < 0.45 and np.mean(accuracies[-10:]) > 0.6, accuracies


def _flat_video(length):
  def jpeg(value):
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(buffer, format='JPEG')
    return buffer.getvalue()
  return [jpeg(10 + 3 * i) for i in range(length)]


def test_vcop_trainer_step_leaves_short_videos_out_and_counts_them(tmp_path):
  lengths = [3, 9, 12, 4, 20, 5, 7, 30, 8, 16, 2, 11, 6, 10, 15, 40]  # tuple of 3 x 2 + 2 gaps: 8
  path = str(tmp_path / 'train.tfrecord')
  dmvr.write_shard(path, [dmvr.make_sequence_example(_flat_video(n), v % 3, data_path=f'v{v}')
                          for v, n in enumerate(lengths)])
  config = tiny_vcop()
  config.data.train_files = path
  config.data.host_split = 'records'
  config.data.shuffle_buffer = 16
  objective = build_objective(config)
  assert objective.plan.min_length == 8
  batch = next(pipeline.make_pretrain_iterator(config.data, objective.plan, global_batch_size=16,
                                               seed=0, process_index=0, process_count=1))
  short = int(np.sum(np.array(lengths) < 8))
  assert int(np.sum(~batch['fits'])) == short  # one epoch of all 16 videos in the batch
  mesh = sharding.make_mesh(config.mesh)
  parts = train_step.build_train_step(config, mesh, objective, 10, 1.0)
  assert set(parts.batch_spec) == {'video', 'key', 'fits'}
  state = parts.create_state()
  device_batch = sharding.host_to_global({k: batch[k] for k in parts.batch_spec}, mesh)
  _, metrics = parts.compile(state)(state, device_batch)
  metrics = jax.device_get(metrics)
  assert metrics['short_videos'] == short
  assert metrics['fits'] == pytest.approx(1 - short / 16)
  assert np.isfinite(metrics['loss']) and metrics['grad_norm'] > 0


# ------------------------------------------------------------------------------------------------
# Shuffle & Learn, OPN, Odd-One-Out, order + transform.
# ------------------------------------------------------------------------------------------------
def test_paper_configs_follow_the_recipes():
  snl = build_objective(config_lib.load_config_file('shuffle_learn_r3d18_ucf101'))
  assert (snl.plan.sampler, snl.plan.ordering, snl.plan.num_views) == ('ordered', 'ordered', 5)
  assert snl.plan.clip_shape[1] == 1 and snl.positive_fraction == 0.25
  assert snl.plan.sampler_params == {'min_gap': 15, 'max_gap': 30} and snl.plan.shared_crop
  opn = build_objective(config_lib.load_config_file('opn_r3d18_ucf101'))
  assert (opn.plan.num_views, opn.plan.clip_shape[1], len(opn.table)) == (4, 1, 12)
  assert (opn.size, opn.jitter, opn.plan.shared_crop) == (80, 5, True)
  o3n = build_objective(config_lib.load_config_file('odd_one_out_r3d18_ucf101'))
  assert (o3n.plan.num_views, o3n.plan.clip_shape[1], o3n.plan.sampler) == (6, 6, 'consecutive')
  assert o3n.network.head.fusion == 'sum_of_differences' and len(o3n.frame_orders) == 719
  ot = build_objective(config_lib.load_config_file('order_transform_r3d18_ucf101'))
  assert (ot.plan.num_views, len(ot.table), ot.loss_weights) == (
      4, 12, {'order': 1.0, 'transform': 1.0})
  for name in ('shuffle_learn_demo', 'opn_demo', 'odd_one_out_demo', 'order_transform_demo',
               'vcop_demo'):
    plan = build_objective(config_lib.load_config_file(name, '/data')).plan
    assert plan.min_length <= 40, name  # the demo videos have 40 frames


def _keys(n, seed=0):
  return jax.random.split(jax.random.key(seed), n)


def _labelled_clips(batch, views, frames, size=6):
  """clips whose every pixel says (view, frame): value 10 * view + frame, float [B, V, T, S, S, 3]."""
  v = np.arange(views)[None, :, None, None, None, None]
  f = np.arange(frames)[None, None, :, None, None, None]
  return np.broadcast_to(10.0 * v + f, (batch, views, frames, size, size, 3)).astype(np.float32)


def test_shuffle_and_learn_keeps_the_ends_and_a_quarter_positive():
  config = config_lib.load_config_file('shuffle_learn_demo', '/data')
  objective = build_objective(config)
  clips = _labelled_clips(4000, 5, 1)
  elements, labels = objective.task({'clips': jnp.asarray(clips), 'keys': _keys(4000)})
  assert elements.shape[2] == 4  # each frame a static clip of 4 copies
  frames = np.asarray(elements)[:, :, 0, 0, 0, 0] / 10  # which of a..e each element is
  positive = np.asarray(labels['in_order']) == 1
  np.testing.assert_array_equal(frames[:, 0], 1)  # b
  np.testing.assert_array_equal(frames[:, 2], 3)  # d
  np.testing.assert_array_equal(frames[positive, 1], 2)  # c
  assert set(frames[~positive, 1]) == {0, 4}  # a or e
  assert abs(positive.mean() - 0.25) < 0.025  # 4000 draws: sigma ~ 0.007
  assert abs(np.mean(frames[~positive, 1] == 0) - 0.5) < 0.04


def test_opn_classes_merge_reversals_with_jitter_and_channel_splitting():
  config = config_lib.load_config_file('opn_demo', '/data')
  objective = build_objective(config)
  rng = np.random.default_rng(0)
  clips = rng.uniform(size=(500, 4, 1, 32, 32, 3)).astype(np.float32)
  elements, labels = objective.task({'clips': jnp.asarray(clips), 'keys': _keys(500)})
  elements = np.asarray(elements)
  assert elements.shape == (500, 4, 4, 28, 28, 3)  # each frame a static clip of 4 copies
  np.testing.assert_array_equal(elements[:, :, 1:], np.repeat(elements[:, :, :1], 3, axis=2))
  np.testing.assert_array_equal(elements[..., 0], elements[..., 2])  # one channel copied
  table = [tuple(p) for p in pretext.orders_up_to_reversal(4)]
  reversed_count = 0
  for b in range(500):
    # Find each element's source frame, flip and shift (a 28 x 28 window within 2 pixels of
    # the centre) by search, then check the order against the class.
    order = []
    for i in range(4):
      found = [(v, flip) for v in range(4) for flip in (False, True)
               for dy in range(5) for dx in range(5)
               if any(np.array_equal(elements[b, i, 0, :, :, 0],
                                     (clips[b, v, 0, :, ::-1] if flip else clips[b, v, 0])
                                     [dy:dy + 28, dx:dx + 28, c]) for c in range(3))]
      assert len({v for v, _ in found}) == 1, (b, i)
      order.append(found[0][0])
    c = int(labels['order'][b])
    assert tuple(order) == table[c] or tuple(order[::-1]) == table[c]
    reversed_count += tuple(order) != table[c]
  assert abs(reversed_count / 500 - 0.5) < 0.1


def test_odd_one_out_shuffles_exactly_the_odd_element():
  objective = build_objective(config_lib.load_config_file('odd_one_out_demo', '/data'))
  clips = _labelled_clips(300, 6, 4)
  elements, labels = objective.task({'clips': jnp.asarray(clips), 'keys': _keys(300)})
  elements = np.asarray(elements)[:, :, :, 0, 0, 0]  # [B, 6, 4]: 10 * element + frame
  odd = np.asarray(labels['odd'])
  assert set(odd) == set(range(6))
  for b in range(300):
    for i in range(6):
      np.testing.assert_array_equal(np.sort(elements[b, i]), 10 * i + np.arange(4))
      in_order = np.array_equal(elements[b, i], 10 * i + np.arange(4))
      assert in_order == (i != odd[b]), (b, i)


def test_order_transform_applies_one_transform_to_the_reordered_segments():
  objective = build_objective(config_lib.load_config_file('order_transform_demo', '/data'))
  rng = np.random.default_rng(2)
  clips = rng.uniform(size=(64, 4, 4, 6, 6, 3)).astype(np.float32)
  elements, labels = objective.task({'clips': jnp.asarray(clips), 'keys': _keys(64)})
  table = [tuple(p) for p in pretext.orders_up_to_reversal(4)]
  assert set(np.asarray(labels['transform'])) == set(range(8))
  for b in range(64):
    t = int(labels['transform'][b])
    undone = np.asarray(jax.vmap(lambda c: pretext.transform_clip(c, pretext.inverse_transform(t)))(
        elements[b]))
    order = [next(v for v in range(4) if np.array_equal(undone[i], clips[b, v])) for i in range(4)]
    c = int(labels['order'][b])
    assert tuple(order) == table[c] or tuple(order[::-1]) == table[c]


def _structured_clips(rng, batch, views, frames, size, gap, within=False):
  """Clips cut in time order from videos that brighten over time (a random base per video, +0.6
  over the tuple, or over each element when `within`) with an asymmetric pattern (a bright
  top-left block, a ramp along x), so both the temporal order and a rotation or flip of the
  frames are visible."""
  base = rng.uniform(0.0, 0.3, (batch, 1, 1, 1, 1, 1))
  if within:  # every element brightens over its own frames (Odd-One-Out's cue)
    t = np.broadcast_to(np.arange(frames)[None] / (frames - 1), (views, frames))
  else:
    t = (np.arange(views)[:, None] * (frames + gap) + np.arange(frames)[None])
    t = t / t.max()
  t = t.reshape(1, views, frames, 1, 1, 1)
  pattern = np.zeros((size, size))
  pattern[: size // 2, : size // 3] = 0.3
  pattern += np.linspace(0, 0.1, size)[None]
  noise = rng.uniform(-0.01, 0.01, (batch, views, frames, size, size, 3))
  x = base + 0.6 * t + pattern[None, None, None, :, :, None] + noise
  return np.clip(x, 0, 1).astype(np.float32)


def tiny(name, **objective):
  config = config_lib.load_config_file(name, '/nowhere')
  config.batch_size = 16
  config.model.depth = 10
  config.model.width_multiplier = 0.125
  config.model.conv_impl = 'conv3d'
  config.data.image_size = 12 if name == 'opn_demo' else 8
  config.data.num_frames = min(config.data.num_frames, 3)
  for key, value in objective.items():
    config.objective[key] = value
  return config


# Shuffle & Learn at half positives here: at its 25% a constant 'no' scores 75%. Odd-One-Out with
# concatenation: sum-of-differences fuses the elements into one position-weighted sum, which a
# linear classifier decodes slowly (both fusions are tested against NumPy above).
@pytest.mark.parametrize('name, overrides, chance', [
    ('shuffle_learn_demo', dict(element_dim=16, positive_fraction=0.5, frame_repeat=1), 0.5),
    ('opn_demo', dict(element_dim=16, pair_dim=16, layer_dropout=0.0, channel_split=False,
                      frame_repeat=1), 1 / 12),
    ('odd_one_out_demo', dict(fusion='concat'), 1 / 6),
    ('order_transform_demo', dict(pair_dim=16, dropout=0.0), 1 / 12),
])
def test_pretext_accuracy_rises_above_chance(name, overrides, chance):
  objective = build_objective(tiny(name, **overrides))
  v, t, s = objective.plan.clip_shape[:3]
  rng = np.random.default_rng(0)
  within = name == 'odd_one_out_demo'
  params, batch_stats, aux = objective.init(
      jax.random.key(0), jnp.asarray(_structured_clips(rng, 16, v, t, s, 1, within)))
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, batch_stats, opt_state, clips, keys):
    def loss_fn(p):
      out = objective.loss(p, batch_stats, aux, {'clips': clips, 'keys': keys},
                           jax.random.key(1), 0)
      return out.loss, (out.batch_stats, out.metrics)
    (_, (batch_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, metrics

  accuracies = []
  for i in range(60):
    clips = _structured_clips(rng, 16, v, t, s, 1, within)
    params, batch_stats, opt_state, metrics = step(params, batch_stats, opt_state, clips,
                                                   _keys(16, 100 + i))
    accuracies.append(float(metrics['pretext_accuracy']))
  # Half-way from chance to 1 on the last 10 batches (new videos and labels, each seen once).
  assert np.mean(accuracies[-10:]) > chance + 0.5 * (1 - chance), (name, accuracies)


def test_pretext_monitor_counts_the_held_out_tuples_that_fit(tmp_path):
  lengths = [3, 9, 12, 4, 20, 5, 7, 30, 8, 16, 2]  # 11 videos (the last batch is padded), 6 fit
  path = str(tmp_path / 'eval.tfrecord')
  dmvr.write_shard(path, [dmvr.make_sequence_example(_flat_video(n), v % 3, data_path=f'v{v}')
                          for v, n in enumerate(lengths)])
  config = tiny_vcop()
  config.data.train_files = config.data.eval_files = path
  config.data.host_split = 'records'
  config.batch_size = 8
  objective = build_objective(config)
  mesh = sharding.make_mesh(config.mesh)
  parts = train_step.build_train_step(config, mesh, objective, 10, 1.0)
  state = parts.create_state()
  from cvrl_jax.evaluate import pretext as pretext_monitor  # pylint: disable=g-import-not-at-top
  monitor = pretext_monitor.make_online_monitor(config, mesh, objective, str(tmp_path))
  first, second = monitor(0, state), monitor(1, state)
  assert first == second  # the same held-out tuples and labels every time
  assert first['monitor/pretext_tuples'] == sum(n >= 8 for n in lengths)
  assert 0.0 <= first['monitor/pretext_accuracy'] <= 1.0
  assert first['monitor/pretext_accuracy'] * 6 == pytest.approx(
      round(first['monitor/pretext_accuracy'] * 6))  # a count of hits out of 6
  with pytest.raises(ValueError, match='needs a pretext objective'):
    pretext_monitor.make_online_monitor(config, mesh, object(), str(tmp_path))
