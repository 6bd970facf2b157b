"""AVBERT (docs/recipes/avbert.md): the sampled InfoNCE against NumPy, the content-aware sampler of
negatives against its known distribution, the masks and audio-visual pairing, which weights each
loss term reaches, one trainer step on records with sound, the configs and their bad values.
"""
import io
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from cvrl_jax import config_lib
from cvrl_jax import sharding
from cvrl_jax import train_step
from cvrl_jax.data import dmvr
from cvrl_jax.data import pipeline
from cvrl_jax.objectives import avbert
from cvrl_jax.objectives import build_objective

RATE, FPS = 8000, 10


def _keys(n, seed=0):
  return jax.random.split(jax.random.key(seed), n)


# ------------------------------------------------------------------------------------------------
# The loss and the sampler of negatives.
# ------------------------------------------------------------------------------------------------
def test_sampled_info_nce_matches_numpy_on_fixed_indices():
  rng = np.random.default_rng(0)
  pred, cand = rng.normal(size=(5, 6)), rng.normal(size=(7, 6))
  positives = np.array([0, 3, 2, 6, 1])
  negatives = np.array([[1, 2], [0, 6], [5, 4], [3, 3], [2, 0]])
  weights = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
  t = 0.2
  loss, acc = avbert.sampled_info_nce(*map(jnp.asarray, (pred, cand, positives, negatives)), t,
                                      jnp.asarray(weights))
  p = pred / np.linalg.norm(pred, axis=1, keepdims=True)
  c = cand / np.linalg.norm(cand, axis=1, keepdims=True)
  want, hits = [], []
  for n in range(5):
    logits = np.array([p[n] @ c[positives[n]]] + [p[n] @ c[j] for j in negatives[n]]) / t
    want.append(np.log(np.sum(np.exp(logits))) - logits[0])
    hits.append(np.argmax(logits) == 0)
  np.testing.assert_allclose(float(loss), np.sum(np.array(want) * weights) / 3, rtol=1e-5)
  assert float(acc) == pytest.approx(np.sum(np.array(hits) * weights) / 3)


def _softmax_without(sim, positive, t):
  w = np.exp(sim / t)
  w[positive] = 0.0
  return w / w.sum()


def test_negatives_never_include_the_positive_and_follow_the_similarity_softmax():
  sim = np.array([0.9, 0.5, 0.1, -0.3, 0.7, -0.8], np.float32)  # row's similarity to 6 items
  n, positive, t = 20_000, 4, 0.5
  one = np.asarray(avbert.sample_negatives(
      _keys(n), jnp.tile(sim, (n, 1)), jnp.full((n,), positive), 1, t))[:, 0]
  assert not np.any(one == positive)
  p = _softmax_without(sim.astype(np.float64), positive, t)
  freq = np.bincount(one, minlength=6) / n
  np.testing.assert_allclose(freq, p, atol=4 * np.sqrt(p.max() / n))  # ~4 sigma
  # Two without replacement: item j is in the pair w.p. p_j + sum_{i != j} p_i p_j / (1 - p_i).
  two = np.asarray(avbert.sample_negatives(
      _keys(n, 1), jnp.tile(sim, (n, 1)), jnp.full((n,), positive), 2, t))
  assert np.all(two[:, 0] != two[:, 1]) and not np.any(two == positive)
  inclusion = np.array([p[j] + sum(p[i] * p[j] / (1 - p[i]) for i in range(6) if i != j)
                        for j in range(6)])
  np.testing.assert_allclose(np.bincount(two.ravel(), minlength=6) / n, inclusion, atol=0.015)
  order = np.argsort(-sim[[0, 1, 2, 3, 5]])  # the most similar are drawn most often
  counts = np.bincount(two.ravel(), minlength=6)[[0, 1, 2, 3, 5]]
  assert list(np.argsort(-counts)) == list(order)


def test_negative_draws_are_deterministic_per_key():
  sim = jax.random.normal(jax.random.key(2), (4, 9))
  a = avbert.sample_negatives(_keys(4), sim, jnp.arange(4), 3, 0.1)
  b = avbert.sample_negatives(_keys(4), sim, jnp.arange(4), 3, 0.1)
  c = avbert.sample_negatives(_keys(4, 5), sim, jnp.arange(4), 3, 0.1)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  with pytest.raises(ValueError, match='cannot draw 9 negatives from 9 candidates'):
    avbert.sample_negatives(_keys(4), sim, jnp.arange(4), 9, 0.1)


# ------------------------------------------------------------------------------------------------
# Masks and pairing.
# ------------------------------------------------------------------------------------------------
def test_masks_hold_the_configured_count_and_pairs_are_own_or_next_row():
  assert [avbert.num_masked(10, r) for r in (0.05, 0.15, 0.2, 0.5)] == [1, 2, 2, 5]
  masks = np.asarray(avbert.draw_masks(_keys(3000), 10, 2))
  assert np.all(masks.sum(1) == 2)
  per_position = masks.mean(0)
  np.testing.assert_allclose(per_position, 0.2, atol=0.03)  # uniform over positions
  matched, partners = map(np.asarray, avbert.draw_partners(_keys(4000, 3)))
  rows = np.arange(4000)
  np.testing.assert_array_equal(partners, np.where(matched, rows, (rows + 1) % 4000))
  assert abs(matched.mean() - 0.5) < 0.03


# ------------------------------------------------------------------------------------------------
# The objective on tiny sizes.
# ------------------------------------------------------------------------------------------------
def tiny(**objective):
  config = config_lib.load_config_file('avbert_demo', '/nowhere')
  config.batch_size = 8
  config.model.depth = 10
  config.model.width_multiplier = 0.125
  config.model.conv_impl = 'conv3d'
  config.data.image_size = 16
  overrides = dict(num_clips=3, clip_frames=2, audio_samples=1000, n_fft=128, hop_length=64,
                   n_mels=16, audio_base_width=4, audio_block_counts=(1,), hidden_size=16,
                   num_heads=2, ffn_size=32, num_layers=1, rank=4, num_negatives=5)
  overrides.update(objective)
  for key, value in overrides.items():
    config.objective[key] = value
  return config


def _inputs(objective, batch=8, seed=0):
  rng = np.random.default_rng(seed)
  v, t = objective.num_clips, objective.plan.views[0].num_frames
  size = objective.plan.views[0].size
  return {'clips': jnp.asarray(rng.uniform(size=(batch, v, t, size, size, 3)), jnp.float32),
          'audio': jnp.asarray(rng.normal(0, 0.3, (batch, v, objective.plan.audio.num_samples)),
                               jnp.float32),
          'keys': _keys(batch, seed)}


def _norm(tree):
  return float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)))


def _jpeg(value):
  buffer = io.BytesIO()
  Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(buffer, format='JPEG')
  return buffer.getvalue()


def _record(v, length=20):
  track = np.random.default_rng(v).normal(0, 0.3, length * RATE // FPS).astype(np.float32)
  return dmvr.make_sequence_example(
      [_jpeg((10 + 7 * i + 30 * v) % 250) for i in range(length)], v % 3, data_path=f'v{v}',
      start_timestamp_us=0, end_timestamp_us=length * 1_000_000 // FPS, audio=track,
      audio_sample_rate=RATE)


@pytest.fixture(scope='module')
def trainer(tmp_path_factory):
  """The tiny objective, one batch of records with sound, the built step and its initial state
  (also on the host, since the step donates it)."""
  path = str(tmp_path_factory.mktemp('avbert') / 'train.tfrecord')
  dmvr.write_shard(path, [_record(v) for v in range(8)])
  config = tiny()
  config.data.train_files = path
  config.data.host_split = 'records'
  config.data.shuffle_buffer = 8
  objective = build_objective(config)
  batch = next(pipeline.make_pretrain_iterator(config.data, objective.plan, global_batch_size=8,
                                               seed=0, process_index=0, process_count=1))
  mesh = sharding.make_mesh(config.mesh)
  parts = train_step.build_train_step(config, mesh, objective, 10, 1.0)
  state = parts.create_state()
  host = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})
  return dict(config=config, objective=objective, batch=batch, mesh=mesh, parts=parts,
              state=state, host=host)


def test_one_trainer_step_on_records_with_sound(trainer):
  objective, batch, parts = trainer['objective'], trainer['batch'], trainer['parts']
  assert objective.plan.sampler == 'spread' and objective.plan.host_fields == ('audio',)
  assert batch['audio'].shape == (8, 3, 1000) and np.abs(batch['audio']).max() > 0
  assert set(parts.batch_spec) == {'video', 'key', 'audio'}
  device_batch = sharding.host_to_global({k: batch[k] for k in parts.batch_spec},
                                         trainer['mesh'])
  _, metrics = parts.compile(trainer['state'])(trainer['state'], device_batch)
  metrics = jax.device_get(metrics)
  assert np.isfinite(metrics['loss']) and metrics['grad_norm'] > 0
  # With random weights the MEP terms start near log(1 + K) (K = 5 negatives).
  for term in ('visual_mep', 'audio_mep', 'joint_mep'):
    assert metrics[f'{term}_loss'] == pytest.approx(np.log(6), abs=0.7), term
  assert metrics['correspondence_loss'] == pytest.approx(np.log(2), abs=0.2)


def test_each_term_reaches_the_weights_of_the_passes_it_uses(trainer):
  objective = trainer['objective']
  inputs = _inputs(objective)
  params, batch_stats = trainer['host']['params'], trainer['host']['batch_stats']

  @jax.jit
  def per_term_grads(p):
    def terms(p):
      values = objective.terms(p, batch_stats, inputs, jax.random.key(1))[0]
      return jnp.stack([values[t] for t in avbert.TERMS])
    values, vjp = jax.vjp(terms, p)
    return values, jax.vmap(vjp)(jnp.eye(len(avbert.TERMS)))[0]

  values, grads = per_term_grads(params)
  assert np.all(np.isfinite(np.asarray(values)))
  # One layer serves every pass; the visual, audio and joint passes use its weight groups
  # 0, 1, 2 (in_proj[g]), and all of them its shared output kernels.
  layer = params['transformer']['encoder']
  assert list(layer) == ['layer0']
  reached = {}
  for i, term in enumerate(avbert.TERMS):
    g = jax.tree.map(lambda x, i=i: x[i], grads)
    shared = g['transformer']['encoder']['layer0']
    reached[term] = dict(backbone=_norm(g['backbone']), audio_cnn=_norm(g['audio_cnn']),
                         shared=_norm(shared['ffn_out']['kernel']),
                         **{f'group{k}': _norm(shared['query']['in_proj'][k]) for k in range(3)})
  on = lambda term, *names: all(reached[term][n] > 0 for n in names)
  off = lambda term, *names: all(reached[term][n] == 0 for n in names)
  assert on('visual_mep', 'backbone', 'shared', 'group0'), reached['visual_mep']
  assert off('visual_mep', 'audio_cnn', 'group1', 'group2'), reached['visual_mep']
  assert on('audio_mep', 'audio_cnn', 'shared', 'group1'), reached['audio_mep']
  assert off('audio_mep', 'backbone', 'group0', 'group2'), reached['audio_mep']
  everything = ('backbone', 'audio_cnn', 'shared', 'group0', 'group1', 'group2')
  assert on('joint_mep', *everything) and on('correspondence', *everything), reached


def test_the_joint_pass_pairs_each_video_with_its_drawn_audio_and_labels_the_pair(trainer):
  objective = trainer['objective']
  inputs = _inputs(objective, seed=2)
  variables = trainer['host']
  key = jax.random.key(3)

  @jax.jit
  def forward():
    terms = objective.terms(variables['params'], variables['batch_stats'], inputs, key,
                            train=False)[0]
    draws = objective.draws(inputs['keys'])
    spec = objective.spectrograms(inputs['audio'], key, train=False)
    masks = {m: draws[f'mask_{m}'] for m in avbert.MODALITIES}
    run = lambda partners: objective.network.apply(variables, inputs['clips'], spec, masks,
                                                   partners, train=False)
    return terms['correspondence'], draws, run(draws['partners']), run(jnp.arange(8))

  correspondence, draws, paired, own = jax.device_get(forward())
  matched = np.asarray(draws['matched'])
  assert 0 < matched.sum() < 8  # both kinds in this batch
  np.testing.assert_array_equal(draws['partners'], np.where(matched, np.arange(8),
                                                            (np.arange(8) + 1) % 8))
  logits = paired['correspondence'].astype(np.float64)
  want = np.mean(np.logaddexp(0.0, logits) - matched * logits)  # label 1: the video's own audio
  assert float(correspondence) == pytest.approx(want, rel=1e-5)
  for name in ('visual', 'audio'):  # the modality passes do not depend on the pairing
    np.testing.assert_allclose(paired[name], own[name], rtol=1e-6, atol=1e-6)
  # The joint pass of a matched row is bitwise the unpaired one; a mismatched row's changes
  # (little at initialisation, where the audio embeddings of the rows are close).
  for name in ('joint_visual', 'joint_audio', 'correspondence'):
    change = np.abs(paired[name] - own[name]).reshape(8, -1).max(axis=1)
    assert np.all(change[matched] == 0) and np.all(change[~matched] > 0), (name, change)


def test_target_stop_gradient_cuts_the_gradient_into_the_targets():
  rng = np.random.default_rng(4)
  pred, targets = (jnp.asarray(rng.normal(size=(3, 4, 6)), jnp.float32) for _ in range(2))
  masks = jnp.asarray(rng.uniform(size=(3, 4)) < 0.5).at[0, 0].set(True)
  rows, keys = jnp.array([0, 2, 1], jnp.int32), _keys(12)
  grads = {}
  for stop in (False, True):
    fake = types.SimpleNamespace(target_stop_gradient=stop, num_negatives=4, temperature=0.1,
                                 sampling_temperature=0.5)
    loss = lambda t, fake=fake: avbert.AVBERT.mep_term(fake, pred, t, rows, masks, keys)[0]
    grads[stop] = np.asarray(jax.grad(loss)(targets))
  assert np.abs(grads[False]).sum() > 0 and np.all(grads[True] == 0)


# ------------------------------------------------------------------------------------------------
# Configs.
# ------------------------------------------------------------------------------------------------
def test_configs_follow_the_recipe():
  paper = config_lib.load_config_file('avbert_r3d50_k700')
  objective = build_objective(paper)
  assert (objective.plan.num_views, objective.plan.sampler_params) == (10, {'max_span': 900})
  assert objective.plan.audio.sample_rate == 44_100 and avbert.mel_frames(paper) == 128
  assert objective.mel['n_mels'] == 80 and objective.num_masked == 2
  t = objective.network.transformer
  assert (t.hidden_size, t.num_heads, t.ffn_size, t.num_layers, t.rank) == (768, 12, 3072, 6, 128)
  assert objective.network.audio_cnn.base_width == 32
  assert (paper.model.depth, paper.model.stem_temporal_kernel) == (50, 5)
  demo = build_objective(config_lib.load_config_file('avbert_demo', '/data'))
  assert demo.plan.audio.sample_rate == 8000 and demo.plan.num_views == 4


@pytest.mark.parametrize('key,value,message', [
    ('mask_ratio', 1.0, r'config.objective.mask_ratio must be in \(0, 1\), got 1.0'),
    ('mask_ratio', 0.9, 'mask_ratio=0.9 masks all 3 clips'),
    ('num_negatives', 24, 'num_negatives=24 must be below the 24 clips of a global batch'),
    ('temperature', 0.0, 'config.objective.temperature must be positive'),
    ('sampling_temperature', -1.0, 'config.objective.sampling_temperature must be positive'),
    ('correspondence_weight', -0.5, 'config.objective.correspondence_weight must be >= 0'),
    ('num_clips', 1, 'config.objective.num_clips must be at least 2'),
    ('spec_augment_rate', 1.0, r'config.objective.spec_augment_rate must be in \[0, 1\)'),
    ('n_fft', 4000, 'audio_samples=1000 is too short for n_fft=4000'),
    ('audio_block_counts', (), 'config.objective.audio_block_counts must be positive'),
    ('num_heads', 3, 'hidden_size=16 must be a multiple of num_heads=3'),
])
def test_bad_values_are_one_sentence_naming_the_key(key, value, message):
  with pytest.raises(ValueError, match=message):
    build_objective(tiny(**{key: value}))
