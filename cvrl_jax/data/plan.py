"""Clip plans: what an objective asks of the pretraining pipeline (docs/objectives.md).

A `ClipPlan` names a temporal sampler of `data/sampling.py`'s SAMPLERS with its parameters, lists
the views (per view: frames, stride, output size, on-device augmentation policy, host crop ranges,
each defaulting to config.data and CVRL's crop), the per-example host fields the objective reads
(`HOST_FIELDS`) and what happens to a video too short for the sampler's guarantee. The objective
declares a plan with `None` where config.data should decide; `resolve(data_cfg)` fills those in
and validates everything, so the pipeline and the trainer only ever see resolved plans.

A plan with `audio` (an `AudioSpec`) also gets, per view, the window of the video's stored audio
track (`convert --audio`) centred on that view's time span: host field 'audio' float32 [V, A]
(A = AudioSpec.num_samples) and, if asked for, 'audio_starts' int32 [V] (the window's first
sample in the track; samples outside the track are zeros). Without it nothing of the audio is
parsed, so frames-only plans (CVRL's) read exactly what they read before.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence, Tuple

from cvrl_jax import config_lib

# Per-example fields the host can add to a batch (name -> (dtype, shape after the batch axis;
# 'V' is the number of views)). Every batch also has 'video', 'label' and 'key'.
HOST_FIELDS: Mapping[str, Tuple[str, Tuple[Any, ...]]] = {
    'view_starts': ('int32', ('V',)),    # first stored frame of each view (before wrapping)
    'video_length': ('int32', ()),       # frames in the stored video
    'crop_boxes': ('int32', ('V', 4)),   # each view's host crop (y, x, height, width), in pixels
    'video_id': ('uint32', (2,)),        # a hash of the record: the same video in every epoch
    'audio': ('float32', ('V', 'A')),    # each view's audio window (plans with `audio` only)
    'audio_starts': ('int32', ('V',)),   # first track sample of each audio window (may be < 0)
}
AUDIO_FIELDS = ('audio', 'audio_starts')
# What happens to a video shorter than the sampler's span ('min_length'):
#   'wrap': indices past the end wrap around (the video is tiled), as CVRL's reference does;
#   'skip': the video is left out of the batch and counted (batch field 'num_skipped').
SHORT_VIDEO_POLICIES = ('wrap', 'skip')


@dataclasses.dataclass(frozen=True)
class ViewSpec:
  """One view of an example. None: config.data.num_frames / frame_stride / image_size, and
  CVRL's crop ranges (config_lib.CVRL_CROP_*)."""
  augment_policy: str
  num_frames: Optional[int] = None
  stride: Optional[int] = None
  size: Optional[int] = None
  crop_area_range: Optional[Tuple[float, float]] = None
  crop_aspect_range: Optional[Tuple[float, float]] = None


@dataclasses.dataclass(frozen=True)
class AudioSpec:
  """What a plan asks of the audio track: windows of `num_samples` samples at `sample_rate` (the
  rate the records must hold, `convert --audio-rate`), one per view, centred on the view's time
  span. A window of the clip's own duration is rate * ((T - 1) * stride + 1) / fps samples."""
  num_samples: int
  sample_rate: int = 44_100


@dataclasses.dataclass(frozen=True)
class ClipPlan:
  """The sampler, the views and the host fields of one objective (see the module docstring)."""
  sampler: str
  views: Tuple[ViewSpec, ...]
  sampler_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  host_fields: Tuple[str, ...] = ()
  short_videos: str = 'wrap'
  # True: every view is cropped with the first view's box (OPN: one region for the whole tuple);
  # False: each view draws its own box (CVRL, VCOP).
  shared_crop: bool = False
  audio: Optional[AudioSpec] = None
  resolved: bool = False

  @property
  def num_views(self) -> int:
    return len(self.views)

  @property
  def ordering(self) -> str:
    """The sampler's guarantee: 'ordered' (starts increase with the view index), 'unordered',
    or 'same_start'."""
    return _sampler(self.sampler).ordering

  @property
  def augment_policies(self) -> Tuple[str, ...]:
    return tuple(v.augment_policy for v in self.views)

  @property
  def clip_shape(self) -> Tuple[int, int, int, int, int]:
    """(V, T, H, W, 3) of the host's uint8 'video' (resolved plans only)."""
    self._require_resolved()
    first = self.views[0]
    return (self.num_views, first.num_frames, first.size, first.size, 3)

  @property
  def min_length(self) -> Optional[int]:
    """Frames a video needs for the sampler's guarantee (None: any length; resolved plans)."""
    self._require_resolved()
    first = self.views[0]
    return _sampler(self.sampler).min_length(
        self.num_views, first.num_frames, first.stride, self.sampler_params)

  def field_shapes(self, batch: int) -> dict[str, Tuple[str, Tuple[int, ...]]]:
    """{field: (dtype, [batch, ...])} of the declared host fields."""
    sizes = {'V': self.num_views, 'A': self.audio.num_samples if self.audio else None}
    return {name: (HOST_FIELDS[name][0],
                   (batch,) + tuple(sizes.get(d, d) for d in HOST_FIELDS[name][1]))
            for name in self.host_fields}

  def _require_resolved(self):
    if not self.resolved:
      raise ValueError('this clip plan is not resolved yet: call plan.resolve(config.data).')

  def replace_views(self, **changes) -> 'ClipPlan':
    """The plan with `changes` (ViewSpec fields) applied to every view."""
    return dataclasses.replace(
        self, views=tuple(dataclasses.replace(v, **changes) for v in self.views))

  def resolve(self, data_cfg) -> 'ClipPlan':
    """The plan with config.data's defaults filled in, validated (one sentence per bad value)."""
    if self.resolved:
      return self
    sampler = _sampler(self.sampler)
    if not self.views:
      raise ValueError('a clip plan needs at least one view.')
    views = tuple(_resolve_view(v, data_cfg, i) for i, v in enumerate(self.views))
    shapes = {(v.num_frames, v.stride, v.size) for v in views}
    if len(shapes) > 1:
      raise ValueError('the views of a clip plan must share their frames, stride and size '
                       f'(the host stacks them into one array), got (frames, stride, size) '
                       f'{sorted(shapes)}.')
    params = sampler.resolve(self.sampler, dict(self.sampler_params), data_cfg)
    sampler.check(len(views), views[0].num_frames, views[0].stride, params)
    for name in self.host_fields:
      if name not in HOST_FIELDS:
        raise ValueError(f'unknown host field {name!r}; the pipeline provides '
                         f'{sorted(HOST_FIELDS)}.')
    if self.short_videos not in SHORT_VIDEO_POLICIES:
      raise ValueError(f'short_videos must be one of {SHORT_VIDEO_POLICIES}, got '
                       f'{self.short_videos!r}.')
    host_fields = tuple(self.host_fields)
    if self.audio is None:
      for name in AUDIO_FIELDS:
        if name in host_fields:
          raise ValueError(f'host field {name!r} needs the plan to ask for audio '
                           '(ClipPlan(audio=AudioSpec(num_samples=...))).')
    else:
      _check_audio(self.audio)
      host_fields += ('audio',) * ('audio' not in host_fields)
    return dataclasses.replace(self, views=views, sampler_params=params,
                               host_fields=host_fields, resolved=True)


def _sampler(name: str):
  # Imported here: the samplers are TensorFlow ops, and objectives import this module.
  from cvrl_jax.data import sampling  # pylint: disable=g-import-not-at-top
  return sampling.get_sampler(name)


def _check_audio(spec: AudioSpec) -> None:
  for name in ('num_samples', 'sample_rate'):
    value = getattr(spec, name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ValueError(f'the clip plan\'s audio {name} must be a positive whole number, got '
                       f'{value!r}.')


def _range(name: str, values: Sequence[float]) -> Tuple[float, float]:
  values = tuple(float(v) for v in values)
  if name == 'crop_area_range':
    ok, rule = len(values) == 2 and 0.0 < values[0] <= values[1] <= 1.0, '0 < low <= high <= 1'
  else:
    ok, rule = len(values) == 2 and 0.0 < values[0] <= values[1], '0 < low <= high'
  if not ok:
    raise ValueError(f'{name} must be (low, high) with {rule}, got {values}')
  return values


def check_ranges(plan: ClipPlan) -> None:
  """Raises ValueError naming the first crop range of the plan's views that is not valid."""
  for view in plan.views:
    for name in ('crop_area_range', 'crop_aspect_range'):
      if getattr(view, name) is not None:
        _range(name, getattr(view, name))


def _resolve_view(view: ViewSpec, data_cfg, index: int) -> ViewSpec:
  from cvrl_jax import augment  # pylint: disable=g-import-not-at-top  (JAX only when resolving)
  augment.get_policy(view.augment_policy)  # an unknown name fails here, naming the known ones
  num_frames = int(data_cfg.num_frames if view.num_frames is None else view.num_frames)
  stride = int(data_cfg.frame_stride if view.stride is None else view.stride)
  size = int(data_cfg.image_size if view.size is None else view.size)
  for key, value in (('num_frames', num_frames), ('stride', stride), ('size', size)):
    if value <= 0:
      raise ValueError(f'view {index} of the clip plan: {key} must be positive, got {value}.')
  area = _range('crop_area_range', view.crop_area_range or config_lib.CVRL_CROP_AREA_RANGE)
  aspect = _range('crop_aspect_range', view.crop_aspect_range or config_lib.CVRL_CROP_ASPECT_RANGE)
  return ViewSpec(augment_policy=view.augment_policy, num_frames=num_frames, stride=stride,
                  size=size, crop_area_range=area, crop_aspect_range=aspect)


def simple_plan(sampler: str, num_views: int, *, augment_policy: str = 'cvrl_view1',
                crop_area_range: Sequence[float] = config_lib.CVRL_CROP_AREA_RANGE,
                crop_aspect_range: Sequence[float] = config_lib.CVRL_CROP_ASPECT_RANGE,
                **sampler_params) -> ClipPlan:
  """num_views alike views from one sampler (tools and tests; objectives spell their plans out)."""
  view = ViewSpec(augment_policy=augment_policy, crop_area_range=tuple(crop_area_range),
                  crop_aspect_range=tuple(crop_aspect_range))
  return ClipPlan(sampler=sampler, views=(view,) * num_views, sampler_params=sampler_params)
