"""The views of an example: which frames, decoded how, cropped and resized to what.

A views fn maps (encoded frames tf.string [L], seed [2]) to uint8 clips [V, T, H, W, 3]; only the
frames a view uses are decoded (JPEG decode-and-crop where a crop box is known). `example_fn`
turns a raw stream element into {'video', 'label', 'key'} with a views fn.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from cvrl_jax.data import records
from cvrl_jax.data import sampling
from cvrl_jax.data import stream as stream_lib

_NO_FRAMES_MESSAGE = 'A record has no frames (its image/encoded feature list is empty).'
_WHOLE_IMAGE = ((0.0, 0.0, 1.0, 1.0),)


def frame_shape(encoded: tf.Tensor, jpeg: bool) -> tf.Tensor:
  """[height, width, channels] of an encoded frame (from the header alone for JPEG)."""
  if jpeg:
    return tf.image.extract_jpeg_shape(encoded)
  return tf.shape(tf.io.decode_image(encoded, channels=3, expand_animations=False))


def decode(encoded: tf.Tensor, jpeg: bool, window: tf.Tensor | None = None) -> tf.Tensor:
  """Decodes frames tf.string [N] to uint8 [N, h, w, 3], cropped to window (y, x, h, w) if given.

  JPEG frames with a window are cropped inside the decoder, which skips the rows outside it.
  """
  def one(frame):
    if jpeg and window is not None:
      return tf.io.decode_and_crop_jpeg(frame, window, channels=3)
    if jpeg:
      image = tf.io.decode_jpeg(frame, channels=3)
    else:
      image = tf.io.decode_image(frame, channels=3, expand_animations=False)
    if window is not None:
      image = image[window[0]:window[0] + window[2], window[1]:window[1] + window[3]]
    return image
  return tf.map_fn(one, encoded, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def resize_bilinear(frames: tf.Tensor, size) -> tf.Tensor:
  """Bilinear resize of uint8 frames [N, h, w, 3] to `size` (height, width), rounded to uint8."""
  resized = tf.image.resize(frames, size, method='bilinear')
  # Bilinear weights are convex, so values stay in [0, 255]: +0.5 and truncation rounds.
  return tf.cast(resized + 0.5, tf.uint8)


def resize_short_side(frames: tf.Tensor, short_side: int) -> tf.Tensor:
  """Resizes frames [N, h, w, 3] so that min(h, w) = short_side (no-op if it already is)."""
  shape = tf.shape(frames)[1:3]
  short = tf.reduce_min(shape)

  def resize():
    scale = short_side / tf.cast(short, tf.float32)
    return resize_bilinear(frames, tf.cast(tf.round(tf.cast(shape, tf.float32) * scale), tf.int32))

  return tf.cond(short == short_side, lambda: frames, resize)


def sample_crop_window(encoded_frame: tf.Tensor, seed: tf.Tensor, *, jpeg: bool,
                       area_range: Sequence[float], aspect_range: Sequence[float]) -> tf.Tensor:
  """A random crop box (y, x, height, width) int32 [4] of a frame, drawn like
  tf.image.sample_distorted_bounding_box (min_object_covered 0.1, 100 attempts, whole frame as
  fallback), statelessly."""
  begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      frame_shape(encoded_frame, jpeg), bounding_boxes=tf.constant([_WHOLE_IMAGE], tf.float32),
      seed=seed, min_object_covered=0.1, aspect_ratio_range=tuple(aspect_range),
      area_range=tuple(area_range), max_attempts=100, use_image_if_no_bounding_boxes=True)
  return tf.stack([begin[0], begin[1], box_size[0], box_size[1]])


def random_resized_crop_clip(encoded: tf.Tensor, seed: tf.Tensor, *, jpeg: bool, size: int,
                             area_range: Sequence[float],
                             aspect_range: Sequence[float]) -> tf.Tensor:
  """One clip: a single random box for all its frames (decode-and-crop), resized to size x size.

  JPEG frames of another size than the first fail (the record is then bad,
  cvrl_jax/data/records.py) rather than being cut elsewhere.
  """
  if jpeg:
    encoded = records.same_size_frames(encoded)
  window = sample_crop_window(encoded[0], seed, jpeg=jpeg, area_range=area_range,
                              aspect_range=aspect_range)
  return resize_bilinear(decode(encoded, jpeg, window), [size, size])


def random_clips_fn(*, starts_fn, num_clips: int, clip_len: int, stride: int, size: int,
                    area_range, aspect_range, jpeg: bool):
  """Views fn: `num_clips` clips at sampled starts, each with its own random resized crop."""
  views_fn, shape = _random_views_fn(
      starts_fn=starts_fn, num_clips=num_clips, clip_len=clip_len, stride=stride, size=size,
      area_ranges=(area_range,) * num_clips, aspect_ranges=(aspect_range,) * num_clips,
      jpeg=jpeg)
  return (lambda frames, seed: views_fn(frames, seed)['video']), shape


def _random_views_fn(*, starts_fn, num_clips: int, clip_len: int, stride: int, size: int,
                     area_ranges, aspect_ranges, jpeg: bool, shared_crop: bool = False):
  """Views fn -> {'video', 'view_starts', 'video_length', 'crop_boxes'}; view v is cropped with
  area_ranges[v] / aspect_ranges[v], or every view with view 0's box when shared_crop."""
  def views(frames, seed):
    temporal_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    length = tf.size(frames)
    starts = starts_fn(temporal_seed, length)
    indices = sampling.clip_indices(starts, clip_len, stride, length)
    crop_seeds = tf.random.experimental.stateless_split(crop_seed, num_clips)
    clips, boxes = [], []
    for v in range(num_clips):
      encoded = tf.gather(frames, indices[v])
      if jpeg:  # frames of another size than the first make the record bad (data/records.py)
        encoded = records.same_size_frames(encoded)
      if shared_crop and v:
        window = boxes[0]
      else:
        window = sample_crop_window(encoded[0], crop_seeds[v], jpeg=jpeg,
                                    area_range=area_ranges[v], aspect_range=aspect_ranges[v])
      clips.append(resize_bilinear(decode(encoded, jpeg, window), [size, size]))
      boxes.append(window)
    return {'video': tf.stack(clips), 'view_starts': tf.cast(starts, tf.int32),
            'video_length': tf.cast(length, tf.int32), 'crop_boxes': tf.stack(boxes)}
  return views, (num_clips, clip_len, size, size, 3)


def plan_views_fn(plan, jpeg: bool):
  """Views fn of a resolved ClipPlan (data/plan.py) -> {'video', 'view_starts', 'video_length',
  'crop_boxes', 'fits'}: its sampler's starts, a random resized crop per view with that view's
  ranges; 'fits' is False when the video is shorter than the sampler's span."""
  sampler = sampling.get_sampler(plan.sampler)
  _, clip_len, size, _, _ = plan.clip_shape
  stride = plan.views[0].stride
  num_views = plan.num_views
  params = dict(plan.sampler_params)
  min_length = plan.min_length
  views_fn, shape = _random_views_fn(
      starts_fn=lambda s, n: sampler.starts(s, n, num_views, clip_len, stride, params),
      num_clips=num_views, clip_len=clip_len, stride=stride, size=size,
      area_ranges=[v.crop_area_range for v in plan.views],
      aspect_ranges=[v.crop_aspect_range for v in plan.views], jpeg=jpeg,
      shared_crop=plan.shared_crop)

  def views(frames, seed):
    out = views_fn(frames, seed)
    out['fits'] = (tf.constant(True) if min_length is None
                   else out['video_length'] >= min_length)
    return out
  return views, shape


_AUDIO_MESSAGE = ('A record has no audio track at the clip plan\'s sample rate, or no '
                  'clip/start/timestamp and clip/end/timestamp to align it with the frames.')


def audio_windows_fn(plan):
  """(parsed record, view_starts int32 [V], video_length) -> {'audio': float32 [V, A],
  'audio_starts': int32 [V]} for a resolved plan with `audio` (data/plan.py).

  A stored frame lasts (end - start timestamp) / L seconds, and sample 0 of the track is the
  sound at the start timestamp (cvrl_jax.convert --audio). View v covers frames
  [s_v, s_v + (T - 1) * stride + 1), and its window of A samples is centred on that span's
  middle: it starts at round((s_v + span / 2) * samples per frame - A / 2). Samples outside the
  track are zeros. A record without audio at the plan's rate fails (the record is bad,
  cvrl_jax/data/records.py).
  """
  num_samples, rate = plan.audio.num_samples, plan.audio.sample_rate
  span = (plan.views[0].num_frames - 1) * plan.views[0].stride + 1

  def windows(parsed, view_starts, video_length):
    waveform = parsed['audio']
    length = tf.size(waveform)
    seconds = tf.cast(parsed['end_timestamp'] - parsed['start_timestamp'], tf.float64) / 1e6
    usable = tf.reduce_all(tf.stack([
        length > 0, tf.equal(parsed['audio_sample_rate'], rate),
        parsed['start_timestamp'] >= 0, seconds > 0]))
    with tf.control_dependencies([tf.debugging.Assert(usable, [_AUDIO_MESSAGE])]):
      per_frame = rate * seconds / tf.cast(video_length, tf.float64)
    middle = (tf.cast(view_starts, tf.float64) + span / 2) * per_frame
    starts = tf.cast(tf.floor(middle - num_samples / 2 + 0.5), tf.int32)
    index = starts[:, None] + tf.range(num_samples, dtype=tf.int32)[None, :]
    inside = (index >= 0) & (index < length)
    audio = tf.where(inside, tf.gather(waveform, tf.clip_by_value(index, 0, length - 1)), 0.0)
    return {'audio': tf.ensure_shape(audio, [plan.num_views, num_samples]),
            'audio_starts': starts}
  return windows


# ------------------------------------------------------------------------------------------------
# Audio-only evaluation (labelled sounds, `convert --audio-only`): windows of the whole track.

_NO_SOUND_MESSAGE = ('A record has no audio track at the evaluation\'s sample rate '
                     '(config.eval.audio.sample_rate).')


def sample_windows(waveform: tf.Tensor, starts: tf.Tensor, num_samples: int) -> tf.Tensor:
  """float32 [V, num_samples]: the track's samples from each start, zeros past its end."""
  length = tf.size(waveform)
  index = tf.cast(starts, tf.int32)[:, None] + tf.range(num_samples, dtype=tf.int32)[None, :]
  inside = (index >= 0) & (index < length)
  return tf.where(inside, tf.gather(waveform, tf.clip_by_value(index, 0, length - 1)), 0.0)


def sound_windows_fn(*, mode: str, num_samples: int, num_windows: int):
  """Windows fn (track float32 [L], seed [2]) -> float32 [V, num_samples] of an evaluation mode:
  'train_clip' one window at a uniformly random start (V = 1); 'test_views' and 'center_clip'
  num_windows windows at evenly spaced starts from 0 to L - num_samples (all at 0 when the
  sound is shorter), so they cover the whole sound and their features are averaged."""
  if mode == 'train_clip':
    def windows(waveform, seed):
      return sample_windows(waveform, sampling.uniform_start(seed, tf.size(waveform),
                                                             num_samples, 1), num_samples)
    return windows, (1, num_samples)

  def fixed(waveform, seed):
    del seed
    starts = sampling.eval_temporal_starts(tf.size(waveform), num_windows, num_samples, 1)
    return sample_windows(waveform, starts, num_samples)
  return fixed, (num_windows, num_samples)


def sound_example_fn(source, windows_fn, shape, *, sample_rate: int, seed: int, key_fn):
  """Raw element -> {'audio': float32 [V, A], 'label', 'key'} (+ 'position', 'mask') of an
  audio-only record; a record without audio at `sample_rate` fails (the record is bad)."""
  def process(ex):
    parsed = source.parse(ex, audio=True)
    key = key_fn(ex)
    waveform = parsed['audio']
    usable = tf.logical_and(tf.size(waveform) > 0,
                            tf.equal(parsed['audio_sample_rate'], sample_rate))
    with tf.control_dependencies([tf.debugging.Assert(usable, [_NO_SOUND_MESSAGE])]):
      audio = windows_fn(tf.identity(waveform), stream_lib.example_seed(seed, key))
    return {'audio': tf.ensure_shape(audio, shape), 'label': parsed['label'], 'key': key}

  def pad(ex):
    del ex
    return {'audio': tf.zeros(shape, tf.float32), 'label': tf.constant(0, tf.int32),
            'key': tf.constant([stream_lib.PAD_KEY, stream_lib.PAD_KEY], tf.uint32)}

  return _masked_example_fn(process, pad)


def video_id(record: tf.Tensor) -> tf.Tensor:
  """uint32 [2]: the 64-bit fingerprint of the raw record, the same for a video in every epoch,
  on every host and after any shuffle."""
  fingerprint = tf.fingerprint(tf.reshape(record, [1]))[0]  # uint8 [8]
  return tf.bitcast(tf.reshape(fingerprint, [2, 4]), tf.uint32)


def test_views_fn(*, num_temporal: int, num_spatial: int, clip_len: int, stride: int,
                  resize: int, crop: int, jpeg: bool):
  """Views fn: temporal x spatial test views, temporal-major ([t0s0, t0s1, ..., t1s0, ...])."""
  def views(frames, seed):
    del seed
    length = tf.size(frames)
    starts = sampling.eval_temporal_starts(length, num_temporal, clip_len, stride)
    indices = tf.reshape(sampling.clip_indices(starts, clip_len, stride, length), [-1])
    # Test clips overlap in all but long videos: decode each stored frame once.
    unique, position = tf.unique(indices)
    decoded = resize_short_side(decode(tf.gather(frames, unique), jpeg), resize)
    decoded = tf.gather(decoded, position)
    height, width = tf.shape(decoded)[1], tf.shape(decoded)[2]
    decoded = tf.reshape(decoded, [num_temporal, clip_len, height, width, 3])
    offsets = sampling.eval_spatial_offsets(height, width, crop, num_spatial)
    crops = [decoded[:, :, offsets[s, 0]:offsets[s, 0] + crop, offsets[s, 1]:offsets[s, 1] + crop]
             for s in range(num_spatial)]
    views = tf.stack(crops, axis=1)  # [temporal, spatial, T, crop, crop, 3]
    return tf.reshape(views, [num_temporal * num_spatial, clip_len, crop, crop, 3])
  return views, (num_temporal * num_spatial, clip_len, crop, crop, 3)


def center_clip_fn(*, clip_len: int, stride: int, resize: int, size: int, jpeg: bool):
  """Views fn: the centred clip, short side resized to `resize`, centre crop of `size`."""
  def views(frames, seed):
    del seed
    length = tf.size(frames)
    indices = sampling.clip_indices(sampling.center_start(length, clip_len, stride), clip_len,
                                    stride, length)[0]
    decoded = resize_short_side(decode(tf.gather(frames, indices), jpeg), resize)
    offset = sampling.eval_spatial_offsets(tf.shape(decoded)[1], tf.shape(decoded)[2], size, 1)[0]
    return decoded[None, :, offset[0]:offset[0] + size, offset[1]:offset[1] + size]
  return views, (1, clip_len, size, size, 3)


def example_fn(source, views_fn, video_shape, *, seed: int, key_fn, keep_fields=(),
               field_specs=None, audio_fn=None):
  """Raw element -> {'video', 'label', 'key'} (+ 'position', 'mask' when the element has them).

  A views fn that returns a dict (plan_views_fn) adds its fields named in `keep_fields`
  (data/plan.py's HOST_FIELDS, 'fits'), and 'video_id' when asked for; padding elements then
  need `field_specs` {name: (dtype, shape)} (zeros; 'fits' False). `audio_fn`
  (audio_windows_fn) adds the views' audio windows; the record's audio is parsed only then.
  """
  keep_fields = tuple(keep_fields)
  def process(ex):
    parsed = source.parse(ex, audio=True) if audio_fn is not None else source.parse(ex)
    key = key_fn(ex)
    frames = parsed['frames']
    with tf.control_dependencies([tf.debugging.assert_positive(tf.size(frames),
                                                               message=_NO_FRAMES_MESSAGE)]):
      video = views_fn(frames, stream_lib.example_seed(seed, key))
    fields = {}
    if isinstance(video, dict):  # a plan's views fn: the video and its host fields
      fields = {k: v for k, v in video.items() if k != 'video'}
      fields['video_id'] = video_id(ex['record'])
      if audio_fn is not None:
        fields.update(audio_fn(parsed, fields['view_starts'], fields['video_length']))
      fields = {k: v for k, v in fields.items() if k in keep_fields}
      video = video['video']
    return {'video': tf.ensure_shape(video, video_shape), 'label': parsed['label'], 'key': key,
            **fields}

  def pad(ex):
    del ex
    fields = {name: tf.zeros(shape, dtype) for name, (dtype, shape) in (field_specs or {}).items()
              if name in keep_fields}
    return {'video': tf.zeros(video_shape, tf.uint8), 'label': tf.constant(0, tf.int32),
            'key': tf.constant([stream_lib.PAD_KEY, stream_lib.PAD_KEY], tf.uint32), **fields}

  return _masked_example_fn(process, pad)


def _masked_example_fn(process, pad):
  """Raw element -> process(element), or pad(element) where a 'valid' flag is false (an
  evaluation batch's filler, marked by 'mask'); the stream's 'position' passes through."""
  def fn(ex):
    if 'valid' in ex:
      out = tf.cond(ex['valid'], lambda: process(ex), lambda: pad(ex))
      out['mask'] = ex['valid']
    else:
      out = process(ex)
    if 'position' in ex:
      out['position'] = ex['position']
    return out
  return fn


