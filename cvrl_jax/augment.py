"""On-device video augmentations as pure JAX functions, and the named policies built from them.

Every op works on one clip, float32 `[T, H, W, 3]` in [0, 1], and every random draw is made once
per clip, so all frames of a clip get the same transform (docs/recipes/cvrl.md, "Augmentation"). `augment_batch` vmaps the per-clip pipeline over the global batch inside
the jitted train step; nothing mixes examples, so a batch sharded over a mesh stays sharded.

The ops follow the reference implementations numerically:
- CVRL (tensorflow/models `video_ssl`): brightness is multiplicative (SimCLR v2); contrast,
  saturation and hue are `tf.image.adjust_*` (the contrast mean is per channel over the whole clip,
  saturation and hue go through HSV); grayscale is `tf.image.rgb_to_grayscale`; the blur is a
  separable Gaussian with SAME (zero) padding; the crop is `sample_distorted_bounding_box` followed
  by `tf.image.resize` (bilinear, half-pixel centres).
- rho-family "aug+" (PySlowFast, torchvision `ColorJitter` on PIL images): contrast blends towards
  the clip's mean gray level and saturation towards the gray image (`jitter_style='torchvision'`).

Per-clip random choices (whether to blur, the jitter order, ...) are written as `jnp.where` over
computed values rather than `lax.cond`/`lax.switch`: under `vmap` a per-example predicate lowers to
a select of every branch anyway, and writing it out lets branches share work. Resampling and blur
are matrix products rather than gathers or depthwise convolutions, which suits TPU/GPU.
"""
import dataclasses
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp

from cvrl_jax.config_lib import CVRL_CROP_AREA_RANGE, CVRL_CROP_ASPECT_RANGE

Array = jax.Array
Size = Union[int, Tuple[int, int]]

# tf.image.rgb_to_grayscale weights (ITU-R 601).
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
# Colour-jitter ops, in the order of their indices in `ClipParams.order`.
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
JITTER_STYLES = ('tf', 'torchvision')
CONTRAST_MEANS = ('clip', 'frame')
_HIGHEST = jax.lax.Precision.HIGHEST  # f32 matmuls stay f32 on TPU (bf16 by default) and GPU (TF32)


def to_float(clip: Array) -> Array:
  """uint8 [0, 255] -> float32 [0, 1] (divided by 255, as the reference does); floats -> float32."""
  if clip.dtype == jnp.uint8:
    return clip.astype(jnp.float32) / 255.0
  if not jnp.issubdtype(clip.dtype, jnp.floating):
    raise ValueError(f'clip must be uint8 or floating point, got dtype {clip.dtype}.')
  return clip.astype(jnp.float32)


def _pair(size: Size) -> Tuple[int, int]:
  return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


# Internally a clip is planar, [3, T, H, W]: the per-channel formulas read whole planes, and on
# TPU the minor dimension is W (tiled to 128 lanes) rather than 3 channels padded to 128.
def _planar(clip: Array) -> Array:
  return jnp.moveaxis(clip, -1, 0)


def _interleaved(p: Array) -> Array:
  return jnp.moveaxis(p, 0, -1)


# ---------------------------------------------------------------------------------------------
# Random resized crop (the reference runs it on the host; this is the on-device equivalent).


class CropBox(NamedTuple):
  """Integer crop window: rows [y, y + height), columns [x, x + width)."""
  y: Array
  x: Array
  height: Array
  width: Array


def full_box(height: int, width: int) -> CropBox:
  return CropBox(*(jnp.asarray(v, jnp.int32) for v in (0, 0, height, width)))


def sample_crop_box(key: Array, image_size: Tuple[int, int], area_range: Tuple[float, float],
                    aspect_range: Tuple[float, float], max_attempts: int = 100,
                    min_object_covered: float = 0.1) -> CropBox:
  """`tf.image.sample_distorted_bounding_box` semantics, all attempts drawn at once.

  Each attempt draws an aspect ratio (width / height), then an integer height uniformly between
  the heights that give the smallest and largest allowed area, width = round(height * aspect),
  and a uniform offset. The first attempt that satisfies the area, bounds and coverage constraints
  wins; if none does, the whole image is used. The whole image is the only bounding box, so
  "covered" means crop area >= min_object_covered * image area.
  """
  height, width = image_size
  k_aspect, k_height, k_y, k_x = jax.random.split(key, 4)
  aspect = jax.random.uniform(k_aspect, (max_attempts,), minval=aspect_range[0],
                              maxval=aspect_range[1])
  min_area = area_range[0] * width * height
  max_area = area_range[1] * width * height

  crop_h = jnp.round(jnp.sqrt(min_area / aspect))  # jnp.round is lrintf's round-half-to-even
  max_h = jnp.round(jnp.sqrt(max_area / aspect))
  # Largest max_h with round(max_h * aspect) <= width, computed as the TF kernel does.
  capped = jnp.floor((width + 0.5 - 1e-7) / aspect)
  capped = jnp.where(jnp.round(capped * aspect) > width, capped - 1, capped)
  max_h = jnp.where(jnp.round(max_h * aspect) > width, capped, max_h)
  max_h = jnp.minimum(max_h, height)
  crop_h = jnp.minimum(crop_h, max_h)
  # Uniform integer in [crop_h, max_h].
  crop_h = crop_h + jnp.floor(jax.random.uniform(k_height, (max_attempts,)) * (max_h - crop_h + 1))
  crop_w = jnp.round(crop_h * aspect)
  # The kernel nudges the height by one when rounding left the area just outside the range.
  crop_h = jnp.where(crop_h * crop_w < min_area, crop_h + 1, crop_h)
  crop_w = jnp.round(crop_h * aspect)
  crop_h = jnp.where(crop_h * crop_w > max_area, crop_h - 1, crop_h)
  crop_w = jnp.round(crop_h * aspect)
  area = crop_h * crop_w
  valid = ((area >= min_area) & (area <= max_area) & (crop_w <= width) & (crop_h <= height) &
           (crop_w > 0) & (crop_h > 0) & (area >= min_object_covered * height * width))
  # Offsets uniform in [0, size - crop) (the kernel never touches the last row/column slot).
  y = jnp.floor(jax.random.uniform(k_y, (max_attempts,)) * (height - crop_h))
  x = jnp.floor(jax.random.uniform(k_x, (max_attempts,)) * (width - crop_w))

  first = jnp.argmax(valid)
  found = valid[first]
  pick = lambda values, fallback: jnp.where(found, values[first], fallback).astype(jnp.int32)
  return CropBox(pick(y, 0), pick(x, 0), pick(crop_h, height), pick(crop_w, width))


def _sample_box_for_output(key: Array, image_size: Tuple[int, int], out_size: Tuple[int, int],
                           area_range: Tuple[float, float], aspect_range: Tuple[float, float],
                           max_attempts: int) -> CropBox:
  # As in the reference, the aspect range is relative to the output's width / height.
  factor = out_size[1] / out_size[0]
  return sample_crop_box(key, image_size, area_range,
                         (aspect_range[0] * factor, aspect_range[1] * factor), max_attempts)


def _resize_matrix(start: Array, length: Array, in_size: int, out_size: int) -> Array:
  """[out_size, in_size] bilinear weights reading the window [start, start + length) of an axis.

  Same sampling as tf.image.resize(method='bilinear', antialias=False) on the cropped window:
  half-pixel centres, source coordinates clamped to the window's edge pixels.
  """
  length = length.astype(jnp.float32)
  src = (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * (length / out_size) - 0.5
  src = jnp.clip(src, 0.0, length - 1.0)
  offsets = (jnp.arange(in_size) - start).astype(jnp.float32)  # input pixels in window coordinates
  return jnp.maximum(0.0, 1.0 - jnp.abs(src[:, None] - offsets[None, :]))


def _crop_and_resize(p: Array, box: CropBox, out_size: Tuple[int, int]) -> Array:
  _, _, height, width = p.shape
  rows = _resize_matrix(box.y, box.height, height, out_size[0])
  cols = _resize_matrix(box.x, box.width, width, out_size[1])
  p = jnp.einsum('oh,cthw->ctow', rows, p, precision=_HIGHEST)
  return jnp.einsum('pw,ctow->ctop', cols, p, precision=_HIGHEST)


def crop_and_resize(clip: Array, box: CropBox, out_size: Size) -> Array:
  """Crops every frame to `box` and resizes bilinearly to out_size, as two matrix products."""
  return _interleaved(_crop_and_resize(_planar(clip), box, _pair(out_size)))


def random_resized_crop(key: Array, clip: Array, out_size: Size,
                        area_range: Tuple[float, float] = CVRL_CROP_AREA_RANGE,
                        aspect_range: Tuple[float, float] = CVRL_CROP_ASPECT_RANGE,
                        max_attempts: int = 100) -> Array:
  """One box per clip (see sample_crop_box), then bilinear resize to out_size; the aspect
  range is relative to the output's width / height, as in the reference."""
  out_size = _pair(out_size)
  box = _sample_box_for_output(key, clip.shape[1:3], out_size, area_range, aspect_range,
                               max_attempts)
  return crop_and_resize(clip, box, out_size)


# ---------------------------------------------------------------------------------------------
# Flip, grayscale, solarisation.


def random_flip(key: Array, clip: Array, prob: float = 0.5) -> Array:
  """Horizontal flip of every frame with probability prob (one coin per clip)."""
  return jnp.where(jax.random.bernoulli(key, prob), clip[:, :, ::-1], clip)


def _luma(r: Array, g: Array, b: Array) -> Array:
  # A weighted sum, not a dot: a dot would run at bf16 precision on TPU.
  return GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b


def _grayscale(p: Array) -> Array:
  return jnp.broadcast_to(_luma(*p), p.shape)


def rgb_to_grayscale(clip: Array) -> Array:
  """tf.image.rgb_to_grayscale, keeping 3 (equal) channels."""
  return _interleaved(_grayscale(_planar(clip)))


def random_grayscale(key: Array, clip: Array, prob: float = 0.2) -> Array:
  return jnp.where(jax.random.bernoulli(key, prob), rgb_to_grayscale(clip), clip)


def solarize(clip: Array) -> Array:
  """x -> x if x < 0.5 else 1 - x."""
  return jnp.where(clip < 0.5, clip, 1.0 - clip)


def random_solarize(key: Array, clip: Array, prob: float = 0.2) -> Array:
  return jnp.where(jax.random.bernoulli(key, prob), solarize(clip), clip)


# ---------------------------------------------------------------------------------------------
# Colour ops with explicit parameters.


def _blend(x: Array, target: Array, factor: Array) -> Array:
  """target + factor * (x - target): the common form of brightness, contrast and saturation."""
  return target + factor * (x - target)


def _channel_mean(p: Array, mean_over: str) -> Array:
  if mean_over not in CONTRAST_MEANS:
    raise ValueError(f'contrast mean_over must be one of {CONTRAST_MEANS}, got {mean_over!r}.')
  return jnp.mean(p, axis=(1, 2, 3) if mean_over == 'clip' else (2, 3), keepdims=True)


def adjust_brightness(clip: Array, factor: Array) -> Array:
  """CVRL/SimCLR v2 brightness: multiplicative (tf.image.adjust_brightness is additive)."""
  return clip * factor


def adjust_contrast(clip: Array, factor: Array, mean_over: str = 'clip') -> Array:
  """tf.image.adjust_contrast: (x - mean) * factor + mean, mean per channel.

  mean_over='clip' averages over all frames (the reference jitters the clip as one tall image);
  'frame' averages each frame on its own (tf.image.adjust_contrast on a [T, H, W, 3] batch).
  """
  p = _planar(clip)
  return _interleaved(_blend(p, _channel_mean(p, mean_over), factor))


def adjust_contrast_torchvision(clip: Array, factor: Array) -> Array:
  """torchvision/PIL contrast: blend towards the mean gray level of the whole clip."""
  p = _planar(clip)
  return _interleaved(_blend(p, jnp.mean(_luma(*p)), factor))


def adjust_saturation_torchvision(clip: Array, factor: Array) -> Array:
  """torchvision/PIL saturation: blend towards the grayscale image."""
  p = _planar(clip)
  return _interleaved(_blend(p, _luma(*p), factor))


def _hue(r: Array, g: Array, b: Array) -> Tuple[Array, Array, Array]:
  """(hue in turns [0, 1), value = max, spread = max - min) as tf.image.rgb_to_hsv computes them."""
  value = jnp.maximum(jnp.maximum(r, g), b)
  spread = value - jnp.minimum(jnp.minimum(r, g), b)
  norm = 1.0 / (6.0 * jnp.where(spread > 0, spread, 1.0))
  hue = jnp.where(r == value, norm * (g - b),
                  jnp.where(g == value, norm * (b - r) + 2.0 / 6.0, norm * (r - g) + 4.0 / 6.0))
  hue = jnp.where(spread > 0, hue, 0.0)
  return jnp.where(hue < 0, hue + 1.0, hue), value, spread


def _hue_ramps(hue: Array) -> Tuple[Array, Array, Array]:
  """Per channel, where it sits between the minimum (0) and maximum (1) for this hue."""
  hue6 = hue * 6.0
  return tuple(jnp.clip(ramp, 0.0, 1.0) for ramp in (
      jnp.abs(hue6 - 3.0) - 1.0, 2.0 - jnp.abs(hue6 - 2.0), 2.0 - jnp.abs(hue6 - 4.0)))


def rgb_to_hsv(rgb: Array) -> Array:
  """tf.image.rgb_to_hsv: [..., 3] RGB in [0, 1] -> [..., 3] (hue, saturation, value) in [0, 1]."""
  hue, value, spread = _hue(rgb[..., 0], rgb[..., 1], rgb[..., 2])
  saturation = jnp.where(value > 0, spread / jnp.where(value > 0, value, 1.0), 0.0)
  return jnp.stack([hue, saturation, value], axis=-1)


def hsv_to_rgb(hsv: Array) -> Array:
  """tf.image.hsv_to_rgb (its branch-free form): v * (1 - s + s * ramp) per channel."""
  saturation, value = hsv[..., 1], hsv[..., 2]
  return jnp.stack([value * (1.0 - saturation + saturation * ramp)
                    for ramp in _hue_ramps(hsv[..., 0])], axis=-1)


def _adjust_hsv(p: Array, saturation_factor: Array, hue_delta: Array) -> Array:
  """RGB -> HSV, saturation times factor (clipped to 1), hue + delta (mod 1), -> RGB.

  Written without the saturation itself: v * s' = min(factor * (max - min), v) is the new
  max - min and each channel is v - v * s' * (1 - ramp), which saves a division per pixel.
  """
  hue, value, spread = _hue(*p)
  new_spread = jnp.minimum(saturation_factor * spread, value)
  return jnp.stack([value - new_spread * (1.0 - ramp)
                    for ramp in _hue_ramps(jnp.mod(hue + hue_delta, 1.0))])


def adjust_saturation(clip: Array, factor: Array) -> Array:
  """tf.image.adjust_saturation: HSV saturation times factor, clipped to [0, 1]."""
  return _interleaved(_adjust_hsv(_planar(clip), factor, 0.0))


def adjust_hue(clip: Array, delta: Array) -> Array:
  """tf.image.adjust_hue: hue rotated by delta (in turns, [-0.5, 0.5])."""
  return _interleaved(_adjust_hsv(_planar(clip), 1.0, delta))


def _uniform_factor(key: Array, max_delta: float) -> Array:
  return jax.random.uniform(key, (), minval=max(0.0, 1.0 - max_delta), maxval=1.0 + max_delta)


def _uniform_delta(key: Array, max_delta: float) -> Array:
  return jax.random.uniform(key, (), minval=-max_delta, maxval=max_delta)


def random_brightness(key: Array, clip: Array, max_delta: float = 0.8) -> Array:
  """Brightness factor ~ U[max(0, 1 - max_delta), 1 + max_delta] (CVRL's random_brightness)."""
  return adjust_brightness(clip, _uniform_factor(key, max_delta))


def random_contrast(key: Array, clip: Array, max_delta: float = 0.8,
                    mean_over: str = 'clip') -> Array:
  return adjust_contrast(clip, _uniform_factor(key, max_delta), mean_over)


def random_saturation(key: Array, clip: Array, max_delta: float = 0.8) -> Array:
  return adjust_saturation(clip, _uniform_factor(key, max_delta))


def random_hue(key: Array, clip: Array, max_delta: float = 0.2) -> Array:
  """Hue delta ~ U[-max_delta, max_delta] (tf.image.random_hue)."""
  return adjust_hue(clip, _uniform_delta(key, max_delta))


def _jitter_step(p: Array, op: Array, factors: Tuple[Array, Array, Array, Array], style: str,
                 contrast_mean: str) -> Array:
  """Applies jitter op `op` (a traced index) to a planar clip and clips to [0, 1].

  The ops fall into two families computed once each: blends (target + f * (x - target)) and HSV
  adjustments; the op's own parameter goes into its family, the other members get identities.
  """
  brightness, contrast, saturation, hue = factors
  is_b, is_c, is_s, is_h = (op == i for i in range(4))
  if style == 'tf':
    factor = jnp.where(is_b, brightness, jnp.where(is_c, contrast, 1.0))
    target = jnp.where(is_c, _channel_mean(p, contrast_mean), 0.0)
    use_hsv = is_s | is_h
    hsv = _adjust_hsv(p, jnp.where(is_s, saturation, 1.0), jnp.where(is_h, hue, 0.0))
  else:  # torchvision: saturation is a blend too; only hue goes through HSV
    gray = _luma(*p)
    factor = jnp.where(is_b, brightness,
                       jnp.where(is_c, contrast, jnp.where(is_s, saturation, 1.0)))
    target = jnp.where(is_c, jnp.mean(gray), jnp.where(is_s, gray, 0.0))
    use_hsv = is_h
    hsv = _adjust_hsv(p, 1.0, jnp.where(is_h, hue, 0.0))
  return jnp.clip(jnp.where(use_hsv, hsv, _blend(p, target, factor)), 0.0, 1.0)


def _color_jitter(p: Array, order: Array, factors: Tuple[Array, Array, Array, Array], style: str,
                  contrast_mean: str) -> Array:
  if style not in JITTER_STYLES:
    raise ValueError(f'jitter style must be one of {JITTER_STYLES}, got {style!r}.')
  # A rolled loop: each position's output is materialised. Unrolled, XLA fused every position
  # into the next one's fusions and recomputed it there (and the program is 40% larger).
  step = lambda i, x: _jitter_step(x, order[i], factors, style, contrast_mean)
  return jax.lax.fori_loop(0, 4, step, p)


def apply_color_jitter(clip: Array, order: Array, brightness: Array, contrast: Array,
                       saturation: Array, hue: Array, style: str = 'tf',
                       contrast_mean: str = 'clip') -> Array:
  """The four jitter ops in `order` (a permutation of BRIGHTNESS..HUE), clipping after each.

  brightness, contrast, saturation are factors (1 = identity), hue is a delta in turns.
  style='tf' is CVRL's (tf.image ops), 'torchvision' is PySlowFast's aug+ (blends with gray).
  """
  factors = (brightness, contrast, saturation, hue)
  return _interleaved(_color_jitter(_planar(clip), order, factors, style, contrast_mean))


def color_jitter(key: Array, clip: Array, prob: float = 0.8, brightness: float = 0.8,
                 contrast: float = 0.8, saturation: float = 0.8, hue: float = 0.2,
                 style: str = 'tf', contrast_mean: str = 'clip') -> Array:
  """With probability prob, the four jitter ops in a random order, with factors drawn from
  [max(0, 1 - d), 1 + d] and the hue delta from [-hue, hue] (the policy pipeline's own draws)."""
  policy = AugmentPolicy(flip_prob=0.0, jitter_prob=prob, brightness=brightness, contrast=contrast,
                         saturation=saturation, hue=hue, jitter_style=style,
                         contrast_mean=contrast_mean, grayscale_prob=0.0, blur_prob=0.0)
  return augment_clip(key, clip, policy)


# ---------------------------------------------------------------------------------------------
# Gaussian blur.


def blur_radius(height: int) -> int:
  """The reference's kernel: size height // 10 (22 at 224), radius int(size / 2), 2r + 1 taps."""
  return (height // 10) // 2


def gaussian_kernel(sigma: Array, radius: int) -> Array:
  """[2r + 1] taps exp(-x^2 / (2 sigma^2)), normalised to sum 1."""
  x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  taps = jnp.exp(-x**2 / (2.0 * jnp.square(sigma)))
  return taps / jnp.sum(taps)


def _blur_matrix(taps: Array, size: int) -> Array:
  """[size, size] banded matrix of a centred 1-D kernel; rows near the edges are truncated, which
  is SAME convolution with zero padding (the reference's tf.nn.depthwise_conv2d)."""
  radius = (taps.shape[0] - 1) // 2
  offset = jnp.arange(size)[None, :] - jnp.arange(size)[:, None]
  return jnp.where(jnp.abs(offset) <= radius, taps[jnp.clip(offset + radius, 0, 2 * radius)], 0.0)


def _separable_blur(p: Array, taps: Array) -> Array:
  # Dense banded matmuls: ~10x the FLOPs of a 23-tap convolution at 224 px, but on the MXU /
  # tensor cores, where per-example depthwise convolutions are slow.
  _, _, height, width = p.shape
  p = jnp.einsum('ij,ctjw->ctiw', _blur_matrix(taps, height), p, precision=_HIGHEST)
  return jnp.einsum('kw,ctiw->ctik', _blur_matrix(taps, width), p, precision=_HIGHEST)


def gaussian_blur(clip: Array, sigma: Array, radius: Optional[int] = None) -> Array:
  """Separable Gaussian blur of each frame, SAME zero padding; radius defaults to blur_radius(H)."""
  radius = blur_radius(clip.shape[1]) if radius is None else radius
  return _interleaved(_separable_blur(_planar(clip), gaussian_kernel(sigma, radius)))


def _gated_blur(p: Array, sigma: Array, apply: Array) -> Array:
  """Blur when `apply`, else identity; the gate goes into the taps, so no second select pass."""
  radius = blur_radius(p.shape[2])
  identity = jnp.zeros(2 * radius + 1).at[radius].set(1.0)
  return _separable_blur(p, jnp.where(apply, gaussian_kernel(sigma, radius), identity))


def random_gaussian_blur(key: Array, clip: Array, prob: float,
                         sigma_range: Tuple[float, float] = (0.1, 2.0)) -> Array:
  k_apply, k_sigma = jax.random.split(key)
  sigma = jax.random.uniform(k_sigma, (), minval=sigma_range[0], maxval=sigma_range[1])
  return _interleaved(_gated_blur(_planar(clip), sigma, jax.random.bernoulli(k_apply, prob)))


# ---------------------------------------------------------------------------------------------
# Policies.


def cvrl_jitter_strengths(strength: float) -> Tuple[float, float, float, float]:
  """CVRL/SimCLR v2 colour strength s -> (brightness, contrast, saturation, hue) max deltas.

  Factors are drawn from [max(0, 1 - d), 1 + d], the hue delta from [-d, d]: (0.8s, 0.8s, 0.8s,
  0.2s), so s = 1 gives factors in [0.2, 1.8] and hue in [-0.2, 0.2]. PySlowFast's aug+ passes
  torchvision's deltas (0.6, 0.6, 0.6, 0.15) directly, which is s = 0.75 in these terms.
  """
  return (0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength)


@dataclasses.dataclass(frozen=True)
class AugmentPolicy:
  """How one clip is augmented; the ops run in the reference's order:
  crop (optional) -> flip -> colour jitter -> grayscale -> blur -> solarise -> clip to [0, 1].

  The crop ranges are also what the host-side crop uses; crop_size=None leaves cropping to the
  host pipeline (the reference's setup), a size crops on device from the fixed-size input.
  """
  flip_prob: float = 0.5
  jitter_prob: float = 0.8
  brightness: float = 0.8  # factor ~ U[max(0, 1 - d), 1 + d]
  contrast: float = 0.8
  saturation: float = 0.8
  hue: float = 0.2  # delta ~ U[-d, d]
  jitter_style: str = 'tf'  # 'tf' (CVRL) | 'torchvision' (PySlowFast aug+)
  contrast_mean: str = 'clip'  # 'clip' (reference) | 'frame' (tf style only)
  grayscale_prob: float = 0.2
  blur_prob: float = 1.0
  blur_sigma: Tuple[float, float] = (0.1, 2.0)
  solarize_prob: float = 0.0
  crop_size: Optional[Tuple[int, int]] = None
  crop_area_range: Tuple[float, float] = CVRL_CROP_AREA_RANGE
  crop_aspect_range: Tuple[float, float] = CVRL_CROP_ASPECT_RANGE
  crop_max_attempts: int = 100

  def __post_init__(self):
    for name in ('flip_prob', 'jitter_prob', 'grayscale_prob', 'blur_prob', 'solarize_prob'):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f'AugmentPolicy.{name} must be in [0, 1], got {getattr(self, name)}.')
    for name in ('brightness', 'contrast', 'saturation'):
      if getattr(self, name) < 0:
        raise ValueError(f'AugmentPolicy.{name} must be >= 0, got {getattr(self, name)}.')
    if not 0.0 <= self.hue <= 0.5:
      raise ValueError(f'AugmentPolicy.hue must be in [0, 0.5], got {self.hue}.')
    if self.jitter_style not in JITTER_STYLES:
      raise ValueError(f'AugmentPolicy.jitter_style must be one of {JITTER_STYLES}, '
                       f'got {self.jitter_style!r}.')
    if self.contrast_mean not in CONTRAST_MEANS:
      raise ValueError(f'AugmentPolicy.contrast_mean must be one of {CONTRAST_MEANS}, '
                       f'got {self.contrast_mean!r}.')
    if self.jitter_style == 'torchvision' and self.contrast_mean != 'clip':
      raise ValueError("AugmentPolicy.contrast_mean='frame' exists only for jitter_style='tf'.")
    if not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
      raise ValueError(f'AugmentPolicy.blur_sigma must be (low, high) with 0 < low <= high, '
                       f'got {self.blur_sigma}.')
    lo, hi = self.crop_area_range
    if not 0.0 < lo <= hi <= 1.0:
      raise ValueError(f'AugmentPolicy.crop_area_range must satisfy 0 < low <= high <= 1, '
                       f'got {self.crop_area_range}.')
    lo, hi = self.crop_aspect_range
    if not 0.0 < lo <= hi:
      raise ValueError(f'AugmentPolicy.crop_aspect_range must satisfy 0 < low <= high, '
                       f'got {self.crop_aspect_range}.')
    if self.crop_size is not None:
      size = _pair(self.crop_size)
      if min(size) <= 0:
        raise ValueError(f'AugmentPolicy.crop_size must be positive, got {self.crop_size}.')
      object.__setattr__(self, 'crop_size', size)


def cvrl_policy(strength: float = 1.0, **overrides) -> AugmentPolicy:
  """CVRL's policy (docs/recipes/cvrl.md): flip 0.5, colour jitter 0.8 at `strength`, grayscale 0.2,
  blur sigma U[0.1, 2.0]; `overrides` set other fields (blur_prob, solarize_prob, ...)."""
  brightness, contrast, saturation, hue = cvrl_jitter_strengths(strength)
  return AugmentPolicy(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue,
                       **overrides)


POLICIES = {
    # CVRL's asymmetric pair: view 1 always blurred; view 2 blurred 0.1 and solarised 0.2.
    'cvrl_view1': cvrl_policy(blur_prob=1.0),
    'cvrl_view2': cvrl_policy(blur_prob=0.1, solarize_prob=0.2),
    # rho-family aug+ (docs/recipes/rho_family.md): torchvision ColorJitter(0.6, 0.6, 0.6, 0.15) w.p. 0.8,
    # grayscale 0.2, blur 0.5; crop scale [0.2, 0.766], aspect [0.75, 1.333].
    'aug_plus': AugmentPolicy(
        brightness=0.6, contrast=0.6, saturation=0.6, hue=0.15, jitter_style='torchvision',
        blur_prob=0.5, crop_area_range=(0.2, 0.766), crop_aspect_range=(0.75, 1.333)),
    # Linear-evaluation training clips: crop (host) and flip, no colour.
    'flip_only': AugmentPolicy(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0),
    'none': AugmentPolicy(flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0),
    # VTDL (docs/recipes/temporal.md): a random square box of 77% of the frame (256 -> 224),
    # torchvision ColorJitter(0.5, 0.5, 0.25, 0.5) always; the paper's rotation (+-10 degrees)
    # is not implemented, a horizontal flip (0.5) stands in for it; no grayscale, no blur.
    'vtdl': AugmentPolicy(
        brightness=0.5, contrast=0.5, saturation=0.25, hue=0.5, jitter_style='torchvision',
        jitter_prob=1.0, grayscale_prob=0.0, blur_prob=0.0, crop_area_range=(0.766, 0.766),
        crop_aspect_range=(1.0, 1.0)),
    # CEP (docs/recipes/temporal.md): random resized crop of 40-100% of the frame (torchvision's
    # default aspect 3:4-4:3), ColorJitter(0.4, 0.4, 0.4, 0.4) always, grayscale 0.2, flip; no blur.
    'cep': AugmentPolicy(
        brightness=0.4, contrast=0.4, saturation=0.4, hue=0.4, jitter_style='torchvision',
        jitter_prob=1.0, grayscale_prob=0.2, blur_prob=0.0, crop_area_range=(0.4, 1.0),
        crop_aspect_range=(0.75, 1.333)),
}


def get_policy(policy: Union[str, AugmentPolicy]) -> AugmentPolicy:
  """A policy by name (see POLICIES); an AugmentPolicy is returned as is."""
  if isinstance(policy, AugmentPolicy):
    return policy
  if policy not in POLICIES:
    raise ValueError(f'unknown augmentation policy {policy!r}; known: {sorted(POLICIES)}.')
  return POLICIES[policy]


# ---------------------------------------------------------------------------------------------
# Per-clip pipeline.


class ClipParams(NamedTuple):
  """Every random draw for one clip (shared by all its frames)."""
  crop: CropBox
  flip: Array  # bool
  jitter: Array  # bool
  order: Array  # int32 [4]: the jitter op at each position (BRIGHTNESS, CONTRAST, SATURATION, HUE)
  brightness: Array  # factor
  contrast: Array  # factor
  saturation: Array  # factor
  hue: Array  # delta
  grayscale: Array  # bool
  blur: Array  # bool
  sigma: Array
  solarize: Array  # bool


def sample_clip_params(key: Array, policy: AugmentPolicy,
                       image_size: Tuple[int, int]) -> ClipParams:
  """Draws one clip's parameters; image_size (H, W) is the input frame size (used by the crop)."""
  keys = jax.random.split(key, 12)
  if policy.crop_size is None:
    crop = full_box(*image_size)
  else:
    crop = _sample_box_for_output(keys[0], image_size, policy.crop_size, policy.crop_area_range,
                                  policy.crop_aspect_range, policy.crop_max_attempts)

  return ClipParams(
      crop=crop,
      flip=jax.random.bernoulli(keys[1], policy.flip_prob),
      jitter=jax.random.bernoulli(keys[2], policy.jitter_prob),
      order=jax.random.permutation(keys[3], 4).astype(jnp.int32),
      brightness=_uniform_factor(keys[4], policy.brightness),
      contrast=_uniform_factor(keys[5], policy.contrast),
      saturation=_uniform_factor(keys[6], policy.saturation),
      hue=_uniform_delta(keys[7], policy.hue),
      grayscale=jax.random.bernoulli(keys[8], policy.grayscale_prob),
      blur=jax.random.bernoulli(keys[9], policy.blur_prob),
      sigma=jax.random.uniform(keys[10], (), minval=policy.blur_sigma[0],
                               maxval=policy.blur_sigma[1]),
      solarize=jax.random.bernoulli(keys[11], policy.solarize_prob),
  )


def apply_clip_params(clip: Array, params: ClipParams, policy: AugmentPolicy) -> Array:
  """The policy's ops with the given draws; ops whose probability is 0 are not traced at all."""
  p = _planar(to_float(clip))
  if policy.crop_size is not None:
    p = _crop_and_resize(p, params.crop, policy.crop_size)
  if policy.flip_prob > 0:
    p = jnp.where(params.flip, p[..., ::-1], p)
  if policy.jitter_prob > 0:
    factors = (params.brightness, params.contrast, params.saturation, params.hue)
    jittered = _color_jitter(p, params.order, factors, policy.jitter_style, policy.contrast_mean)
    p = jnp.where(params.jitter, jittered, p)
  if policy.grayscale_prob > 0:
    p = jnp.where(params.grayscale, _grayscale(p), p)
  if policy.blur_prob > 0:
    p = _gated_blur(p, params.sigma, params.blur)
  if policy.solarize_prob > 0:
    p = jnp.where(params.solarize, solarize(p), p)
  return _interleaved(jnp.clip(p, 0.0, 1.0))


def _check_clip(clip: Array) -> None:
  if clip.ndim != 4 or clip.shape[-1] != 3:
    raise ValueError(f'clip must be [T, H, W, 3], got shape {tuple(clip.shape)}.')


def augment_clip(key: Array, clip: Array, policy: Union[str, AugmentPolicy]) -> Array:
  """One clip uint8/float [T, H, W, 3] -> float32 [T, H', W', 3] in [0, 1]."""
  _check_clip(clip)
  policy = get_policy(policy)
  params = sample_clip_params(key, policy, clip.shape[1:3])
  return apply_clip_params(clip, params, policy)


def example_keys(base_key: Array, key_words: Array) -> Array:
  """Per-example keys from the pipeline's uint32 [B, 2] words (docs/architecture.md, "Data
  contract"): fold_in(fold_in(base_key, w0), w1), the same on any number of hosts."""
  if key_words.ndim != 2 or key_words.shape[1] != 2:
    raise ValueError(f'key words must be [B, 2], got shape {tuple(key_words.shape)}.')
  key_words = key_words.astype(jnp.uint32)
  return jax.vmap(lambda w: jax.random.fold_in(jax.random.fold_in(base_key, w[0]), w[1]))(key_words)


def augment_batch(keys: Array, videos: Array,
                  policies: Sequence[Union[str, AugmentPolicy]]) -> Array:
  """videos [B, V, T, H, W, 3] -> float32 [B, V, T, H', W', 3]; view v of example i uses
  policies[v] and key fold_in(keys[i], v). keys: [B] PRNG keys (e.g. from example_keys)."""
  if videos.ndim != 6 or videos.shape[-1] != 3:
    raise ValueError(f'videos must be [B, V, T, H, W, 3], got shape {tuple(videos.shape)}.')
  if jnp.shape(keys)[0] != videos.shape[0]:
    raise ValueError(f'need one key per example: {videos.shape[0]} videos, '
                     f'keys of shape {tuple(jnp.shape(keys))}.')
  policies = [get_policy(p) for p in policies]
  if len(policies) != videos.shape[1]:
    raise ValueError(f'need one augmentation policy per view: {videos.shape[1]} views, '
                     f'{len(policies)} policies.')
  crop_sizes = {p.crop_size or tuple(videos.shape[3:5]) for p in policies}
  if len(crop_sizes) > 1:
    raise ValueError(f'all views must come out the same size, got {sorted(crop_sizes)}.')

  def one_example(key, video):
    return jnp.stack([augment_clip(jax.random.fold_in(key, view), video[view], policy)
                      for view, policy in enumerate(policies)])

  return jax.vmap(one_example)(keys, videos)


# ----------------------------------------------------------------------------------------------
# Temporal consistent augmentation (TCA, VTDL; docs/recipes/temporal.md): every frame of a clip
# is mixed with one frame of the same clip, x_t <- (1 - lam) x_t + lam x_s, so the clip's
# temporal differences x_{t+1} - x_t are exactly (1 - lam) times the input's.


def tca_mix(clip: Array, lam: Array, frame: Array) -> Array:
  """(1 - lam) * clip + lam * clip[frame] for one clip [T, H, W, C] (frame: an int index)."""
  lam = jnp.asarray(lam, clip.dtype)
  return (1.0 - lam) * clip + lam * jnp.take(clip, frame, axis=0)[None]


def random_tca(key: Array, clip: Array, max_lambda: float = 0.1) -> Array:
  """TCA with lam ~ U(0, max_lambda) and a uniformly random frame s of the clip [T, H, W, C]."""
  if not 0.0 <= max_lambda < 1.0:
    raise ValueError(f'the TCA mixing weight bound must be in [0, 1), got {max_lambda}.')
  lam_key, frame_key = jax.random.split(key)
  lam = jax.random.uniform(lam_key, (), jnp.float32, 0.0, max_lambda)
  frame = jax.random.randint(frame_key, (), 0, clip.shape[0])
  return tca_mix(clip, lam, frame)
