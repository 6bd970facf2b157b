"""Temporal and spatial view samplers (docs/recipes/cvrl.md, "Temporal sampling" and "Evaluation").

Every sampler is a pure function of TensorFlow ops usable inside a tf.data map. Random ones are
stateless: they take an explicit seed tensor of shape [2] (int32 or int64), so a clip depends
only on its seed, never on parallelism or call order. Frame indices past the end of a video wrap
around (the video is tiled), as in the reference.

Notation: L = frames in the video, T = frames per clip, s = temporal stride. A clip starting at
frame a covers frames a, a + s, ..., a + (T - 1) s. M = L - (T - 1) s when L > (T - 1) s (the
number of starts whose clip fits), else L.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

try:
  import tensorflow as tf
except ImportError:  # the table below (names, parameters, checks) is plain Python

  class _TensorFlowMissing:
    """Stands in for `tf` where TensorFlow is not installed (a JAX-only benchmark machine):
    resolving a ClipPlan works; running a sampler says what is missing."""

    def __getattr__(self, name):
      raise ImportError('the temporal samplers are TensorFlow ops: install tensorflow-cpu '
                        '(pip install -e .) to run the input pipeline.')

  tf = _TensorFlowMissing()

_BISECTION_STEPS = 54  # halves [0, 1] down to float64 resolution


def num_start_positions(video_len: tf.Tensor, clip_len: int, stride: int) -> tf.Tensor:
  """M: L - (T - 1) * stride if the clip fits in the video, else L (int32)."""
  video_len = tf.cast(video_len, tf.int32)
  span = (clip_len - 1) * stride
  return tf.where(video_len > span, video_len - span, video_len)


def clip_indices(starts: tf.Tensor, clip_len: int, stride: int, video_len: tf.Tensor) -> tf.Tensor:
  """Frame indices [V, T] of clips starting at `starts` [V], wrapped modulo the video length."""
  offsets = tf.range(clip_len, dtype=tf.int32) * stride
  return (tf.cast(starts, tf.int32)[:, None] + offsets[None, :]) % tf.cast(video_len, tf.int32)


# ----------------------------------------------------------------------------------------------
# CVRL's gap distribution: density p(k) = (p+1)/(p M) (1 - (k/M)^p) on [0, M] (p = 1: 2(M-k)/M^2).


def gap_pdf(k: np.ndarray, m: float, power: float = 1.0) -> np.ndarray:
  """NumPy reference: density of the gap k between the two CVRL clip starts."""
  x = np.asarray(k, np.float64) / m
  return np.where((x >= 0) & (x <= 1), (power + 1) / (power * m) * (1 - x ** power), 0.0)


def gap_cdf(k: np.ndarray, m: float, power: float = 1.0) -> np.ndarray:
  """NumPy reference: the recipe's CDF, -k^(p+1) / (p M^(p+1)) + k (p+1) / (p M), on [0, M]."""
  k = np.clip(np.asarray(k, np.float64), 0.0, m)
  return -k ** (power + 1) / (power * m ** (power + 1)) + k * (power + 1) / (power * m)


def _invert_gap_cdf(u: tf.Tensor, power: float) -> tf.Tensor:
  """x in [0, 1] with F(x) = ((p+1) x - x^(p+1)) / p = u, in float64."""
  if power == 1.0:
    return 1.0 - tf.sqrt(1.0 - u)  # 2x - x^2 = u
  if power <= 0:
    raise ValueError(f'The sampling power must be positive; got {power}.')
  # F is increasing on [0, 1]: bisection reaches the float64 root in 54 halvings.
  low, high = tf.zeros_like(u), tf.ones_like(u)
  for _ in range(_BISECTION_STEPS):
    mid = 0.5 * (low + high)
    below = ((power + 1) * mid - mid ** (power + 1)) / power < u
    low, high = tf.where(below, mid, low), tf.where(below, high, mid)
  return 0.5 * (low + high)


def sample_gap(seed: tf.Tensor, m: tf.Tensor, power: float = 1.0, shape=()) -> tf.Tensor:
  """Continuous gap k in [0, M] with CDF `gap_cdf` (float64), by exact inverse-CDF sampling."""
  u = tf.random.stateless_uniform(shape, seed=seed, dtype=tf.float64)
  return _invert_gap_cdf(u, power) * tf.cast(m, tf.float64)


def cvrl_pair_starts(seed: tf.Tensor, video_len: tf.Tensor, clip_len: int, stride: int,
                     power: float = 1.0) -> tf.Tensor:
  """CVRL's two clip starts (int32 [2]).

  If the clip fits (L > (T - 1) s): gap k = floor of a draw from the gap distribution on [0, M]
  (at most M - 1), start 1 ~ U{0, ..., M - k - 1}, start 2 = start 1 + k, then the pair is put
  in random order. Otherwise both starts are independent uniforms over the L frames.
  """
  gap_seed, start_seed, order_seed, short_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 4))
  m = num_start_positions(video_len, clip_len, stride)
  gap = tf.minimum(tf.cast(tf.floor(sample_gap(gap_seed, m, power)), tf.int32), m - 1)
  first = tf.random.stateless_uniform([], start_seed, minval=0, maxval=m - gap, dtype=tf.int32)
  swap = tf.random.stateless_uniform([], order_seed) < 0.5
  pair = tf.where(swap, tf.stack([first + gap, first]), tf.stack([first, first + gap]))
  independent = tf.random.stateless_uniform([2], short_seed, minval=0, maxval=m, dtype=tf.int32)
  fits = tf.cast(video_len, tf.int32) > (clip_len - 1) * stride
  return tf.where(fits, pair, independent)


def rho_starts(seed: tf.Tensor, video_len: tf.Tensor, num_clips: int, clip_len: int, stride: int,
               max_distance: int = 0) -> tf.Tensor:
  """ρ independent uniform clip starts (int32 [ρ]) over the M start positions.

  With `max_distance` > 0 every pair of starts is at most `max_distance` frames apart: a window of
  min(max_distance + 1, M) consecutive start positions is placed uniformly, then each start is
  uniform within it.
  """
  window_seed, starts_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  m = num_start_positions(video_len, clip_len, stride)
  window = m if max_distance <= 0 else tf.minimum(m, max_distance + 1)
  offset = tf.random.stateless_uniform([], window_seed, minval=0, maxval=m - window + 1,
                                       dtype=tf.int32)
  return offset + tf.random.stateless_uniform([num_clips], starts_seed, minval=0, maxval=window,
                                              dtype=tf.int32)


def same_starts(seed: tf.Tensor, video_len: tf.Tensor, num_clips: int, clip_len: int,
                stride: int) -> tf.Tensor:
  """One uniform start repeated num_clips times (int32 [num_clips]): views of the same frames
  that differ only in their spatial crop and augmentation (the rho-family's rho = 1 ablation)."""
  return tf.repeat(rho_starts(seed, video_len, 1, clip_len, stride), num_clips)


def uniform_start(seed: tf.Tensor, video_len: tf.Tensor, clip_len: int, stride: int) -> tf.Tensor:
  """One uniformly random clip start (int32 [1]), as for linear-evaluation training clips."""
  return rho_starts(seed, video_len, 1, clip_len, stride)


def temporal_negative_starts(seed: tf.Tensor, video_len: tf.Tensor, num_clips: int,
                             clip_len: int, stride: int, min_distance: int = 2) -> tf.Tensor:
  """VTDL's starts (int32 [num_clips]): one uniform start for the first num_clips - 1 views
  (anchor and positive), and for the last view (the temporal negative) another uniform start of
  the same video, moved on by a third of the video (mod the start positions) when it lies within
  `min_distance` frames of the anchor's, as the authors' sampler does.

  A video with few start positions can still give a negative near the anchor (at most 3 starts
  cannot be kept apart); indices past the end wrap around.
  """
  anchor_seed, negative_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  anchor = rho_starts(anchor_seed, video_len, 1, clip_len, stride)[0]
  negative = rho_starts(negative_seed, video_len, 1, clip_len, stride)[0]
  positions = num_start_positions(video_len, clip_len, stride)
  shift = tf.maximum(tf.cast(video_len, tf.int32) // 3, 1)
  negative = tf.where(tf.abs(negative - anchor) <= min_distance,
                      (negative + shift) % positions, negative)
  return tf.concat([tf.fill([num_clips - 1], anchor), [negative]], axis=0)


def consecutive_starts(seed: tf.Tensor, video_len: tf.Tensor, num_clips: int, clip_len: int,
                       stride: int, gap: int = 0) -> tf.Tensor:
  """num_clips clips one after the other in time (int32 [num_clips]), `gap` frames between the
  last frame of one clip and the first frame of the next (VCOP: 3 x 16 frames, gap 8).

  The tuple spans `consecutive_span` frames and is placed uniformly in the video; a video
  shorter than the span puts the tuple at frame 0 (the caller skips those, see data/plan.py).
  """
  step = (clip_len - 1) * stride + 1 + gap
  span = consecutive_span(num_clips, clip_len, stride, gap)
  room = tf.maximum(tf.cast(video_len, tf.int32) - span + 1, 1)
  first = tf.random.stateless_uniform([], seed, minval=0, maxval=room, dtype=tf.int32)
  return first + step * tf.range(num_clips, dtype=tf.int32)


def consecutive_span(num_clips: int, clip_len: int, stride: int, gap: int) -> int:
  """Frames covered by `consecutive_starts`' tuple: num_clips clips plus the gaps between them."""
  return num_clips * ((clip_len - 1) * stride + 1) + (num_clips - 1) * gap


def ordered_starts(seed: tf.Tensor, video_len: tf.Tensor, num_clips: int, clip_len: int,
                   stride: int, min_gap: int = 1, max_gap: int = 1) -> tf.Tensor:
  """num_clips strictly increasing starts (int32 [num_clips]): each gap between consecutive
  starts uniform in [min_gap, max_gap] frames, then the tuple placed uniformly in the video.

  Single frames (clip_len 1) in time order serve Shuffle & Learn and OPN. A video too short for
  the drawn gaps gets its gaps scaled down to fit (still increasing when the video has at least
  `ordered_span(num_clips, clip_len, stride, min_gap)` frames; shorter ones are skipped).
  """
  gap_seed, offset_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  gaps = tf.random.stateless_uniform([num_clips - 1], gap_seed, minval=min_gap,
                                     maxval=max_gap + 1, dtype=tf.int32)
  tail = (clip_len - 1) * stride + 1
  video_len = tf.cast(video_len, tf.int32)
  total = tf.reduce_sum(gaps)
  fit = tf.maximum(video_len - tail, 0)
  # Too long for the video: shrink every gap's excess over min_gap proportionally.
  excess = tf.cast(gaps - min_gap, tf.float64)
  room_for_excess = tf.cast(tf.maximum(fit - (num_clips - 1) * min_gap, 0), tf.float64)
  total_excess = tf.cast(tf.maximum(total - (num_clips - 1) * min_gap, 1), tf.float64)
  scaled = min_gap + tf.cast(tf.math.floor(excess * room_for_excess / total_excess), tf.int32)
  gaps = tf.where(total > fit, scaled, gaps)
  offsets = tf.concat([[0], tf.cumsum(gaps)], axis=0)
  room = tf.maximum(video_len - tail - offsets[-1] + 1, 1)
  first = tf.random.stateless_uniform([], offset_seed, minval=0, maxval=room, dtype=tf.int32)
  return first + offsets


def ordered_span(num_clips: int, clip_len: int, stride: int, min_gap: int) -> int:
  """The fewest frames `ordered_starts` needs: every gap at min_gap, then the last clip."""
  return (num_clips - 1) * min_gap + (clip_len - 1) * stride + 1


def spread_starts(seed: tf.Tensor, video_len: tf.Tensor, num_clips: int, clip_len: int,
                  stride: int, max_span: int = 0) -> tf.Tensor:
  """num_clips clips spread evenly over a stretch of the video (int32 [num_clips]): the stretch
  is min(L, max_span) frames (the whole video when max_span is 0), placed uniformly; the first
  clip starts where it starts and the last ends where it ends, the others evenly between
  (starts floor(v * (stretch - clip span) / (num_clips - 1)) from its start). AVBERT's sequence
  of 10 clips over up to 30 s is max_span = 30 x the stored fps.
  """
  video_len = tf.cast(video_len, tf.int32)
  stretch = video_len if max_span <= 0 else tf.minimum(video_len, max_span)
  offset = tf.random.stateless_uniform([], seed, minval=0, maxval=video_len - stretch + 1,
                                       dtype=tf.int32)
  last = tf.maximum(stretch - ((clip_len - 1) * stride + 1), 0)
  return offset + tf.range(num_clips, dtype=tf.int32) * last // max(num_clips - 1, 1)


# ----------------------------------------------------------------------------------------------
# The sampler table: name -> Sampler. A pretraining clip plan (data/plan.py) names one; the
# pipeline calls `sampler.starts(seed, video_len, num_clips, clip_len, stride, params)`.

ORDERINGS = ('unordered', 'ordered', 'same_start')


@dataclasses.dataclass(frozen=True)
class Sampler:
  """A temporal sampler: its start function, the ordering it guarantees, its parameters.

  fn(seed, video_len, num_clips, clip_len, stride, **params) -> int32 [num_clips] starts.
  params: the parameter names and their defaults; a default that is a string names the
    config.data key it is read from (so CVRL's and the rho configs keep their keys).
  check(num_clips, clip_len, stride, params): raises ValueError naming a bad parameter.
  min_length(num_clips, clip_len, stride, params): frames a video needs for the guarantee, or
    None when any length works (indices past the end wrap around).
  """
  fn: Callable[..., tf.Tensor]
  ordering: str
  params: Mapping[str, Any]
  check: Callable[..., None]
  min_length: Callable[..., Any] = lambda num_clips, clip_len, stride, params: None

  def resolve(self, name: str, params: Mapping[str, Any], data_cfg) -> dict[str, Any]:
    """params with defaults filled in (from config.data where the default names a key)."""
    unknown = sorted(set(params) - set(self.params))
    if unknown:
      raise ValueError(f'sampler {name!r} has no parameter {unknown[0]!r}; its parameters are '
                       f'{sorted(self.params)}.')
    out = {}
    for key, default in self.params.items():
      if key in params:
        out[key] = params[key]
      elif isinstance(default, str):
        out[key] = data_cfg[default]
      else:
        out[key] = default
    return out

  def starts(self, seed: tf.Tensor, video_len: tf.Tensor, num_clips: int, clip_len: int,
             stride: int, params: Mapping[str, Any]) -> tf.Tensor:
    return self.fn(seed, video_len, num_clips, clip_len, stride, **params)


def _check_pair(num_clips, clip_len, stride, params):
  del clip_len, stride
  if num_clips != 2:
    raise ValueError(f"the 'cvrl_pair' sampler makes 2 clips, but the plan has {num_clips} views.")
  if not float(params['power']) > 0:
    raise ValueError(f"the 'cvrl_pair' sampler's power must be positive, got {params['power']}.")


def _check_rho(num_clips, clip_len, stride, params):
  del clip_len, stride
  if num_clips < 1:
    raise ValueError(f"the 'rho' sampler needs at least 1 view, got {num_clips}.")
  if int(params['max_distance']) < 0:
    raise ValueError(f"the 'rho' sampler's max_distance must be >= 0 (0: unlimited), got "
                     f"{params['max_distance']}.")


def _check_same(num_clips, clip_len, stride, params):
  del clip_len, stride, params
  if num_clips < 1:
    raise ValueError(f"the 'same_start' sampler needs at least 1 view, got {num_clips}.")


def _check_consecutive(num_clips, clip_len, stride, params):
  del clip_len, stride
  if num_clips < 2:
    raise ValueError(f"the 'consecutive' sampler needs at least 2 views, got {num_clips}.")
  if int(params['gap']) < 0:
    raise ValueError(f"the 'consecutive' sampler's gap must be >= 0 frames, got {params['gap']}.")


def _check_ordered(num_clips, clip_len, stride, params):
  del clip_len, stride
  if num_clips < 2:
    raise ValueError(f"the 'ordered' sampler needs at least 2 views, got {num_clips}.")
  low, high = int(params['min_gap']), int(params['max_gap'])
  if not 1 <= low <= high:
    raise ValueError(f"the 'ordered' sampler needs 1 <= min_gap <= max_gap, got min_gap={low}, "
                     f"max_gap={high}.")


def _check_temporal_negative(num_clips, clip_len, stride, params):
  del clip_len, stride
  if num_clips < 2:
    raise ValueError(f"the 'temporal_negative' sampler needs at least 2 views (anchor side and "
                     f"negative), got {num_clips}.")
  if int(params['min_distance']) < 0:
    raise ValueError(f"the 'temporal_negative' sampler's min_distance must be >= 0 frames, got "
                     f"{params['min_distance']}.")


def _fn_temporal_negative(seed, video_len, num_clips, clip_len, stride, min_distance):
  return temporal_negative_starts(seed, video_len, num_clips, clip_len, stride, int(min_distance))


def _fn_pair(seed, video_len, num_clips, clip_len, stride, power):
  del num_clips
  return cvrl_pair_starts(seed, video_len, clip_len, stride, float(power))


def _fn_rho(seed, video_len, num_clips, clip_len, stride, max_distance):
  return rho_starts(seed, video_len, num_clips, clip_len, stride, int(max_distance))


def _fn_consecutive(seed, video_len, num_clips, clip_len, stride, gap):
  return consecutive_starts(seed, video_len, num_clips, clip_len, stride, int(gap))


def _check_spread(num_clips, clip_len, stride, params):
  if num_clips < 1:
    raise ValueError(f"the 'spread' sampler needs at least 1 view, got {num_clips}.")
  max_span, least = int(params['max_span']), (clip_len - 1) * stride + num_clips
  if max_span < 0 or 0 < max_span < least:
    raise ValueError(f"the 'spread' sampler's max_span must be 0 (the whole video) or at least "
                     f"{least} frames (one clip plus a frame per further view, so that starts "
                     f"increase), got {params['max_span']}.")


def _fn_spread(seed, video_len, num_clips, clip_len, stride, max_span):
  return spread_starts(seed, video_len, num_clips, clip_len, stride, int(max_span))


def _fn_ordered(seed, video_len, num_clips, clip_len, stride, min_gap, max_gap):
  return ordered_starts(seed, video_len, num_clips, clip_len, stride, int(min_gap), int(max_gap))


SAMPLERS: dict[str, Sampler] = {
    # CVRL's decreasing-gap pair, in random order.
    'cvrl_pair': Sampler(_fn_pair, 'unordered', {'power': 'sampling_power'}, _check_pair),
    # Independent uniform starts, at most max_distance apart when > 0 (the rho-family).
    'rho': Sampler(_fn_rho, 'unordered', {'max_distance': 'rho_max_distance'}, _check_rho),
    # One start for every view (the rho = 1 ablation).
    'same_start': Sampler(same_starts, 'same_start', {}, _check_same),
    # One start for all views but the last, another start of the video for the last (VTDL).
    'temporal_negative': Sampler(_fn_temporal_negative, 'unordered', {'min_distance': 2},
                                 _check_temporal_negative),
    # Clips one after the other, a fixed gap apart (VCOP, Odd-One-Out, order + transform).
    'consecutive': Sampler(
        _fn_consecutive, 'ordered', {'gap': 0}, _check_consecutive,
        lambda n, t, s, p: consecutive_span(n, t, s, int(p['gap']))),
    # Strictly increasing starts with random gaps (Shuffle & Learn, OPN).
    'ordered': Sampler(
        _fn_ordered, 'ordered', {'min_gap': 1, 'max_gap': 1}, _check_ordered,
        lambda n, t, s, p: ordered_span(n, t, s, int(p['min_gap']))),
    # Clips spread evenly over up to max_span frames (AVBERT's clip sequence); strictly
    # increasing once the stretch holds num_clips - 1 frames more than one clip.
    'spread': Sampler(
        _fn_spread, 'ordered', {'max_span': 0}, _check_spread,
        lambda n, t, s, p: (t - 1) * s + 1 + (n - 1) if n > 1 else None),
}


def get_sampler(name: str) -> Sampler:
  if name not in SAMPLERS:
    raise ValueError(f'unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}.')
  return SAMPLERS[name]


# ----------------------------------------------------------------------------------------------
# Evaluation views.


def eval_temporal_starts(video_len: tf.Tensor, num_views: int, clip_len: int,
                         stride: int) -> tf.Tensor:
  """Starts of evenly spaced test clips (int32 [num_views]).

  linspace(0, max(0, L - T * s), num_views) truncated to integers (the recipe: L - 64 for 32 x 2).
  """
  last = tf.maximum(0, tf.cast(video_len, tf.int32) - clip_len * stride)
  return tf.cast(tf.linspace(0.0, tf.cast(last, tf.float32), num_views), tf.int32)


def center_start(video_len: tf.Tensor, clip_len: int, stride: int) -> tf.Tensor:
  """Start of the single centred clip (int32 [1]): the middle of `eval_temporal_starts`' range."""
  last = tf.maximum(0, tf.cast(video_len, tf.int32) - clip_len * stride)
  return (last // 2)[None]


def eval_spatial_offsets(height: tf.Tensor, width: tf.Tensor, crop_size: int,
                         num_views: int) -> tf.Tensor:
  """(y, x) corners [num_views, 2] of square test crops.

  1 view: the centre. 3 views: start, centre and end of the long side (the width if square),
  centred on the short side.
  """
  height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
  center_y, center_x = (height - crop_size) // 2, (width - crop_size) // 2
  if num_views == 1:
    return tf.stack([center_y, center_x])[None]
  if num_views != 3:
    raise ValueError(f'Spatial test views must be 1 or 3; got {num_views}.')
  along = lambda extent: tf.stack([0, (extent - crop_size) // 2, extent - crop_size])
  tall = height > width
  ys = tf.where(tall, along(height), tf.fill([3], center_y))
  xs = tf.where(tall, tf.fill([3], center_x), along(width))
  return tf.stack([ys, xs], axis=1)
