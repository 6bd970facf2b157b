"""Temporal samplers against their definitions (spec "Temporal sampling" and "Evaluation")."""
import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import tensorflow as tf

from cvrl_jax.data import sampling

NUM_DRAWS = 10000


def _draw(fn, num=NUM_DRAWS):
  """`fn(seed)` for seeds (0, 0) ... (num - 1, 0), vectorised through tf.data."""
  seeds = tf.stack([tf.range(num, dtype=tf.int64), tf.zeros([num], tf.int64)], axis=1)
  dataset = tf.data.Dataset.from_tensor_slices(seeds).map(fn, num_parallel_calls=4).batch(num)
  return next(dataset.as_numpy_iterator())


@pytest.mark.parametrize('power', [1.0, 2.0, 0.5])
def test_reference_density_integrates_to_its_cdf(power):
  m = 37.0
  total, _ = scipy.integrate.quad(lambda k: sampling.gap_pdf(k, m, power), 0, m)
  assert total == pytest.approx(1.0, abs=1e-9)
  for k in (3.0, 12.5, 30.0):
    partial, _ = scipy.integrate.quad(lambda x: sampling.gap_pdf(x, m, power), 0, k)
    assert sampling.gap_cdf(k, m, power) == pytest.approx(partial, abs=1e-9)
  # p = 1 is the spec's 2(M - k) / M^2 and 2k/M - k^2/M^2.
  if power == 1.0:
    assert sampling.gap_pdf(10.0, m) == pytest.approx(2 * (m - 10) / m**2)
    assert sampling.gap_cdf(10.0, m) == pytest.approx(2 * 10 / m - 10**2 / m**2)


@pytest.mark.parametrize('power', [1.0, 2.0, 0.5])
def test_continuous_gap_follows_the_cdf(power):
  m = 50.0
  gaps = sampling.sample_gap(tf.constant([7, 3], tf.int64), m, power, shape=[NUM_DRAWS]).numpy()
  assert gaps.min() >= 0 and gaps.max() <= m
  result = scipy.stats.kstest(gaps, lambda k: sampling.gap_cdf(k, m, power))
  assert result.pvalue > 1e-3, result
  expected_mean, _ = scipy.integrate.quad(lambda k: k * sampling.gap_pdf(k, m, power), 0, m)
  if power == 1.0:
    assert expected_mean == pytest.approx(m / 3)
  standard_error = gaps.std() / np.sqrt(NUM_DRAWS)
  assert abs(gaps.mean() - expected_mean) < 5 * standard_error


def test_bisection_inverse_matches_closed_form():
  u = tf.constant(np.linspace(0, 1, 101), tf.float64)
  closed = sampling._invert_gap_cdf(u, 1.0)  # pylint: disable=protected-access
  # The general path with p = 1 + 1e-12 is the same distribution numerically.
  general = sampling._invert_gap_cdf(u, 1.0 + 1e-12)  # pylint: disable=protected-access
  np.testing.assert_allclose(general.numpy(), closed.numpy(), atol=1e-9)


def test_pair_sampler_gap_start_and_order_distribution():
  video_len, clip_len, stride = 60, 8, 2
  m = video_len - (clip_len - 1) * stride  # 46
  pairs = _draw(lambda s: sampling.cvrl_pair_starts(s, video_len, clip_len, stride))
  gaps = np.abs(pairs[:, 1] - pairs[:, 0])
  # Both clips fit without wrapping.
  assert pairs.min() >= 0 and pairs.max() <= m - 1
  # Integer gap = floor of the continuous gap: P(g = j) = F(j + 1) - F(j) (last bin to M - 1).
  edges = sampling.gap_cdf(np.arange(m + 1), m)
  expected = np.diff(edges) * NUM_DRAWS
  observed = np.bincount(gaps, minlength=m)
  chi2 = scipy.stats.chisquare(observed, expected)
  assert chi2.pvalue > 1e-3, chi2
  # Start 1 given the gap is uniform on [0, M - g): its position in that range is U[0, 1).
  earlier = pairs.min(axis=1)
  relative = (earlier + 0.5) / (m - gaps)
  assert scipy.stats.kstest(relative, 'uniform').pvalue > 1e-3
  # The order is shuffled: the later clip comes first half the time.
  later_first = np.mean(pairs[:, 0] > pairs[:, 1]) / np.mean(gaps > 0)
  assert abs(later_first - 0.5) < 0.02


def test_pair_sampler_short_video_uses_independent_starts_and_wraps():
  video_len, clip_len, stride = 20, 16, 2  # (T - 1) * s = 30 >= L
  pairs = _draw(lambda s: sampling.cvrl_pair_starts(s, video_len, clip_len, stride))
  observed = np.bincount(pairs.ravel(), minlength=video_len)
  assert scipy.stats.chisquare(observed).pvalue > 1e-3  # uniform over all L frames
  assert abs(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]) < 0.03  # independent
  indices = sampling.clip_indices(tf.constant([17]), clip_len, stride, video_len).numpy()
  np.testing.assert_array_equal(indices[0], (17 + 2 * np.arange(16)) % 20)


def test_pair_sampler_with_power_follows_the_general_cdf():
  video_len, clip_len, stride, power = 50, 4, 2, 3.0
  m = video_len - (clip_len - 1) * stride  # 44
  pairs = _draw(lambda s: sampling.cvrl_pair_starts(s, video_len, clip_len, stride, power), 4000)
  gaps = np.abs(pairs[:, 1] - pairs[:, 0])
  expected = np.diff(sampling.gap_cdf(np.arange(m + 1), m, power)) * len(gaps)
  bins = expected > 5  # chi-square needs populated bins; merge the sparse tail into one
  observed = np.bincount(gaps, minlength=m)
  observed = np.append(observed[bins], observed[~bins].sum())
  expected = np.append(expected[bins], expected[~bins].sum())
  assert scipy.stats.chisquare(observed, expected).pvalue > 1e-3
  # A larger power moves mass to larger gaps (mean 0.4 M for p = 3 vs M / 3 for p = 1).
  assert gaps.mean() + 0.5 == pytest.approx(0.4 * m, abs=1.0)


def test_rho_starts_uniform_and_max_distance():
  video_len, clip_len, stride = 40, 4, 2
  m = video_len - (clip_len - 1) * stride  # 34
  starts = _draw(lambda s: sampling.rho_starts(s, video_len, 4, clip_len, stride), 5000)
  assert starts.shape == (5000, 4) and starts.min() >= 0 and starts.max() == m - 1
  assert scipy.stats.chisquare(np.bincount(starts.ravel(), minlength=m)).pvalue > 1e-3
  near = _draw(lambda s: sampling.rho_starts(s, video_len, 3, clip_len, stride, 5), 5000)
  spread = near.max(axis=1) - near.min(axis=1)
  assert spread.max() == 5 and near.min() == 0 and near.max() == m - 1


def test_eval_temporal_starts_follow_the_spec():
  # Spec: starts = linspace(0, max(0, L - 64), 10) for 32 frames at stride 2.
  for video_len in (300, 100, 64, 40):
    starts = sampling.eval_temporal_starts(video_len, 10, 32, 2).numpy()
    expected = np.linspace(0, max(0, video_len - 64), 10).astype(np.int32)
    np.testing.assert_array_equal(starts, expected)
  assert sampling.center_start(300, 32, 2).numpy().tolist() == [(300 - 64) // 2]


@pytest.mark.parametrize('height,width,expected', [
    (256, 340, [[0, 0], [0, 42], [0, 84]]),  # landscape: along the width
    (340, 256, [[0, 0], [42, 0], [84, 0]]),  # portrait: along the height
    (300, 300, [[22, 0], [22, 22], [22, 44]]),  # square: along the width, centred vertically
])
def test_eval_spatial_offsets(height, width, expected):
  np.testing.assert_array_equal(
      sampling.eval_spatial_offsets(height, width, 256, 3).numpy(), expected)
  center = sampling.eval_spatial_offsets(height, width, 224, 1).numpy()
  np.testing.assert_array_equal(center, [[(height - 224) // 2, (width - 224) // 2]])


def test_samplers_are_deterministic_in_the_seed():
  seed = tf.constant([5, 9], tf.int64)
  a = sampling.cvrl_pair_starts(seed, 200, 16, 2).numpy()
  b = sampling.cvrl_pair_starts(seed, 200, 16, 2).numpy()
  np.testing.assert_array_equal(a, b)
  others = {tuple(sampling.cvrl_pair_starts(tf.constant([s, 9], tf.int64), 200, 16, 2).numpy())
            for s in range(20)}
  assert len(others) > 15
