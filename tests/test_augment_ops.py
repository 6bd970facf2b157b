"""Each augmentation op against an independent reference: TensorFlow's own tf.image op, SciPy, or
the reference's formula in NumPy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
import tensorflow as tf

from cvrl_jax import augment

ATOL = 2e-6  # float32 rounding differences between XLA and the TF kernels

# Jitted once with traced parameters: eager dispatch would compile every primitive per shape.
adjust_contrast = jax.jit(augment.adjust_contrast, static_argnames='mean_over')
adjust_saturation = jax.jit(augment.adjust_saturation)
adjust_hue = jax.jit(augment.adjust_hue)
rgb_to_hsv = jax.jit(augment.rgb_to_hsv)
hsv_to_rgb = jax.jit(augment.hsv_to_rgb)
crop_and_resize = jax.jit(augment.crop_and_resize, static_argnames='out_size')
gaussian_blur = jax.jit(augment.gaussian_blur, static_argnames='radius')
sample_crop_box = jax.jit(augment.sample_crop_box, static_argnums=(1, 2, 3))


@pytest.fixture(scope='module')
def clip():
  """[T=2, 8, 8, 3] in [0, 1] on the uint8 grid, so channel ties and gray pixels occur."""
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (2, 8, 8, 3))
  x[0, 0, :4] = x[0, 0, :4, :1]  # gray pixels (hue undefined)
  x[1, 1, :4, 1] = x[1, 1, :4, 0]  # two channels tied at the maximum
  return (x / 255.0).astype(np.float32)


def test_brightness_is_multiplicative(clip):
  # CVRL (SimCLR v2) brightness is x * factor; tf.image.adjust_brightness would add a delta.
  for factor in (0.2, 1.0, 1.8):
    np.testing.assert_allclose(augment.adjust_brightness(clip, factor), clip * np.float32(factor),
                               atol=ATOL)


@pytest.mark.parametrize('factor', [0.2, 0.7, 1.8])
def test_contrast_matches_tf(clip, factor):
  per_frame = tf.image.adjust_contrast(clip, factor).numpy()  # tf: mean over each image
  np.testing.assert_allclose(adjust_contrast(clip, factor, mean_over='frame'), per_frame,
                             atol=ATOL)
  # The reference jitters the clip as one tall image [T * H, W, 3]: the mean is clip-wide.
  t, h, w, c = clip.shape
  tall = tf.image.adjust_contrast(clip.reshape(t * h, w, c), factor).numpy().reshape(clip.shape)
  np.testing.assert_allclose(adjust_contrast(clip, factor), tall, atol=ATOL)


@pytest.mark.parametrize('factor', [0.0, 0.2, 0.7, 1.8])
def test_saturation_matches_tf(clip, factor):
  np.testing.assert_allclose(adjust_saturation(clip, factor),
                             tf.image.adjust_saturation(clip, factor).numpy(), atol=ATOL)


@pytest.mark.parametrize('delta', [-0.5, -0.2, 0.05, 0.2, 0.5])
def test_hue_matches_tf(clip, delta):
  np.testing.assert_allclose(adjust_hue(clip, delta), tf.image.adjust_hue(clip, delta).numpy(),
                             atol=ATOL)


def test_hsv_and_grayscale_match_tf(clip):
  hsv = tf.image.rgb_to_hsv(clip).numpy()
  np.testing.assert_allclose(rgb_to_hsv(clip), hsv, atol=ATOL)
  np.testing.assert_allclose(hsv_to_rgb(hsv), tf.image.hsv_to_rgb(hsv).numpy(), atol=ATOL)
  gray = tf.image.rgb_to_grayscale(clip).numpy()
  np.testing.assert_allclose(augment.rgb_to_grayscale(clip), np.repeat(gray, 3, axis=-1), atol=ATOL)


def test_torchvision_style_blends_with_gray(clip):
  """PIL/torchvision: contrast blends towards the mean gray level, saturation towards gray."""
  gray = clip @ np.float32([0.2989, 0.5870, 0.1140])
  for factor in (0.4, 1.6):
    np.testing.assert_allclose(augment.adjust_contrast_torchvision(clip, factor),
                               factor * clip + (1 - factor) * gray.mean(), atol=ATOL)
    np.testing.assert_allclose(augment.adjust_saturation_torchvision(clip, factor),
                               factor * clip + (1 - factor) * gray[..., None], atol=ATOL)


def test_solarize(clip):
  np.testing.assert_array_equal(augment.solarize(clip), np.where(clip < 0.5, clip, 1 - clip))


def test_blur_kernel_size_follows_reference():
  assert augment.blur_radius(224) == 11  # kernel size 224 // 10 = 22 -> radius 11, 23 taps
  taps = np.asarray(augment.gaussian_kernel(1.5, 11))
  x = np.arange(-11, 12)
  expected = np.exp(-x**2 / (2 * 1.5**2))
  np.testing.assert_allclose(taps, expected / expected.sum(), rtol=1e-6)


@pytest.mark.parametrize('sigma,radius', [(1.3, 3), (0.6, None)])
def test_blur_matches_scipy_2d_convolution(sigma, radius):
  x = np.random.default_rng(1).random((2, 24, 20, 3)).astype(np.float32)
  r = augment.blur_radius(24) if radius is None else radius
  taps = np.asarray(augment.gaussian_kernel(sigma, r), np.float64)
  kernel2d = np.outer(taps, taps)
  expected = np.stack([
      np.stack([scipy.ndimage.correlate(x[t, :, :, c].astype(np.float64), kernel2d,
                                        mode='constant', cval=0.0) for c in range(3)], axis=-1)
      for t in range(2)])  # zero padding = TF's SAME depthwise convolution
  np.testing.assert_allclose(gaussian_blur(x, sigma, radius), expected, atol=1e-5)


@pytest.mark.parametrize('box,out_size', [
    ((0, 0, 20, 30), (16, 16)),  # whole frame, downscale
    ((3, 5, 7, 9), (16, 16)),  # upscale (edge clamping matters)
    ((2, 1, 18, 25), (16, 16)),
    ((5, 11, 15, 16), (16, 16)),  # one axis unscaled
])
def test_crop_and_resize_matches_tf_resize(box, out_size):
  x = np.random.default_rng(2).random((2, 20, 30, 3)).astype(np.float32)
  y0, x0, h, w = box
  expected = tf.image.resize(x[:, y0:y0 + h, x0:x0 + w], out_size).numpy()
  got = crop_and_resize(x, augment.CropBox(*map(jnp.int32, box)), out_size)
  np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.fixture(scope='module')
def crop_boxes():
  """4000 boxes from tf.image.stateless_sample_distorted_bounding_box and from ours."""
  n, size, area, aspect = 4000, (48, 64), (0.3, 1.0), (0.5, 2.0)

  @tf.function
  def tf_boxes(seeds):
    def one(seed):
      begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
          [*size, 3], tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed, min_object_covered=0.1,
          aspect_ratio_range=aspect, area_range=area, max_attempts=100,
          use_image_if_no_bounding_boxes=True)
      return tf.concat([begin[:2], extent[:2]], axis=0)
    return tf.map_fn(one, seeds)

  seeds = np.stack([np.arange(n), 7 * np.arange(n) + 1], axis=1).astype(np.int32)
  ours = jax.jit(jax.vmap(lambda k: jnp.stack(augment.sample_crop_box(k, size, area, aspect))))(
      jax.random.split(jax.random.key(0), n))
  return size, area, tf_boxes(seeds).numpy(), np.asarray(ours)


def test_crop_boxes_valid(crop_boxes):
  (height, width), (lo, hi), _, boxes = crop_boxes
  y, x, h, w = boxes.T
  assert (y >= 0).all() and (x >= 0).all() and (y + h <= height).all() and (x + w <= width).all()
  area = h * w / (height * width)
  assert (area >= lo).all() and (area <= hi).all()
  # width = round(aspect * height) with aspect in [0.5, 2]
  assert (w <= np.round(2.0 * h) + 1).all() and (w >= np.round(0.5 * h) - 1).all()


def test_crop_box_distribution_matches_tf(crop_boxes):
  (height, width), _, tf_boxes, boxes = crop_boxes

  def stats(b):
    y, x, h, w = b.T.astype(np.float64)
    return {'area': h * w / (height * width), 'aspect': w / h, 'y_centre': y + h / 2,
            'x_centre': x + w / 2}

  ours, theirs = stats(boxes), stats(tf_boxes)
  for name in ours:
    p = scipy.stats.ks_2samp(ours[name], theirs[name]).pvalue
    assert p > 1e-3, f'{name}: KS p-value {p:.2g} (ours mean {ours[name].mean():.3f}, ' \
                     f'tf mean {theirs[name].mean():.3f})'


def test_crop_box_falls_back_to_whole_frame():
  # No box of area >= 0.9 with aspect in [3, 4] fits a square frame.
  box = sample_crop_box(jax.random.key(3), (32, 32), (0.9, 1.0), (3.0, 4.0))
  assert tuple(int(v) for v in box) == (0, 0, 32, 32)
  _, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
      [32, 32, 3], tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=[1, 2], area_range=(0.9, 1.0),
      aspect_ratio_range=(3.0, 4.0), min_object_covered=0.1, use_image_if_no_bounding_boxes=True)
  assert tuple(extent.numpy()[:2]) == (32, 32)


def test_random_resized_crop_resizes_its_box():
  # Area range (1, 1) leaves only the whole frame, so the result is tf.image.resize of the frame.
  x = np.random.default_rng(4).random((2, 16, 16, 3)).astype(np.float32)
  crop = jax.jit(augment.random_resized_crop, static_argnums=(2, 3, 4))
  got = crop(jax.random.key(5), x, (24, 20), (1.0, 1.0), (0.9, 1.1))
  np.testing.assert_allclose(got, tf.image.resize(x, (24, 20)).numpy(), atol=1e-5)


def test_random_wrappers_apply_with_their_probabilities():
  n = 2000
  rng = np.random.default_rng(6)
  x = rng.uniform(0.05, 0.95, (1, 4, 4, 3)).astype(np.float32)

  def draw(key):
    k = jax.random.split(key, 6)
    return (augment.random_flip(k[0], x), augment.random_grayscale(k[1], x),
            augment.random_solarize(k[2], x), augment.color_jitter(k[3], x),
            augment.random_brightness(k[4], x), augment.random_hue(k[5], x))

  flip, gray, sol, jitter, bright, hue = map(
      np.asarray, jax.jit(jax.vmap(draw))(jax.random.split(jax.random.key(7), n)))
  changed = lambda out: np.abs(out - x).max(axis=(1, 2, 3, 4)) > 1e-6
  for name, hit, prob in [
      ('flip', np.all(np.isclose(flip, x[:, :, ::-1]), axis=(1, 2, 3, 4)), 0.5),
      ('grayscale', np.all(np.isclose(gray, gray[..., :1]), axis=(1, 2, 3, 4)), 0.2),
      ('solarize', changed(sol), 0.2),
      ('color_jitter', changed(jitter), 0.8)]:
    assert abs(hit.mean() - prob) < 5 * np.sqrt(prob * (1 - prob) / n), (name, hit.mean())
  factor = (bright / x).reshape(n, -1)
  np.testing.assert_allclose(factor, factor[:, :1].repeat(factor.shape[1], 1), rtol=1e-5)
  assert factor.min() >= 0.2 and factor.max() <= 1.8 and abs(factor.mean() - 1) < 0.03
  # Hue rotation keeps each pixel's max and min channel values.
  np.testing.assert_allclose(hue.max(-1), np.broadcast_to(x.max(-1), hue.shape[:-1]), atol=1e-6)
  np.testing.assert_allclose(hue.min(-1), np.broadcast_to(x.min(-1), hue.shape[:-1]), atol=1e-6)
