"""bench/host_resize.py's pieces against TensorFlow's own ops: the DCT-ratio rule, the
reduced-scale decode-and-crop, and the device resize the padded design would use."""
import importlib.util
import os

import numpy as np
import pytest
import tensorflow as tf

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    'bench_host_resize', os.path.join(REPO_ROOT, 'bench', 'host_resize.py'))
host_resize = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(host_resize)


@pytest.mark.parametrize('height,width,index', [
    (447, 1000, 0),   # short side under 2 x 224: full scale
    (448, 500, 1),    # ratio 2
    (895, 1280, 1),
    (896, 900, 2),    # ratio 4
    (1792, 1800, 3),  # ratio 8
])
def test_dct_ratio_is_the_largest_the_short_side_allows(height, width, index):
  window = tf.constant([0, 0, height, width])
  assert int(host_resize.dct_ratio_index(window, 224)) == index


def _jpeg_frames(height, width, count):
  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, (height // 8, width // 8, 3)).astype(np.uint8)
  image = np.kron(base, np.ones((8, 8, 1), np.uint8))  # blocky, so JPEG keeps real structure
  return tf.stack([tf.io.encode_jpeg(np.roll(image, 8 * i, axis=1), quality=90)
                   for i in range(count)])


def test_reduced_decode_equals_scaled_decode_then_crop():
  encoded = _jpeg_frames(720, 1280, 2)
  window = tf.constant([96, 200, 480, 640])  # both sides >= 448: ratio 2
  reduced = host_resize.decode_reduced(encoded, window, 224).numpy()
  assert reduced.shape == (2, 240, 320, 3)
  for i in range(2):
    scaled = tf.io.decode_jpeg(encoded[i], channels=3, ratio=2).numpy()
    np.testing.assert_array_equal(reduced[i], scaled[48:288, 100:420])


def test_reduced_decode_keeps_full_scale_for_small_crops():
  encoded = _jpeg_frames(256, 448, 1)
  window = tf.constant([16, 24, 200, 300])
  reduced = host_resize.decode_reduced(encoded, window, 224).numpy()
  # The same op the pipeline runs today (cropping inside the decoder upsamples chroma at the
  # crop's edge differently from decoding whole, so that is not the reference).
  expected = tf.io.decode_and_crop_jpeg(encoded[0], window, channels=3).numpy()
  assert reduced.shape == (1, 200, 300, 3)
  np.testing.assert_array_equal(reduced[0], expected)


def test_device_resize_of_a_padded_crop_equals_tensorflows_resize():
  """Downscaling never samples past the crop, so the zero padding does not show."""
  rng = np.random.default_rng(1)
  crop = rng.integers(0, 256, (2, 300, 410, 3)).astype(np.uint8)
  padded = np.zeros((2, 320, 602, 3), np.uint8)
  padded[:, :300, :410] = crop
  ours = np.asarray(host_resize.device_resize(padded, np.array([300, 410])))
  expected = tf.image.resize(crop, [224, 224], method='bilinear').numpy()
  np.testing.assert_allclose(ours, expected, atol=0.01)  # float32 rounding on a 0-255 scale
