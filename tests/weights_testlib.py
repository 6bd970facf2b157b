"""Shared by the weight import/export tests: a tiny checkpoint in the TF Model Garden's layout,
written by TensorFlow, and the Model Garden backbone's forward pass in TensorFlow ops.

The layout (tf.train.Checkpoint(backbone=ResNet3D): 'backbone/layer_with_weights-N/...', one
layer with weights per stem conv, stem BN and BottleneckBlock3D, whose attributes are
_shortcut_conv/_norm0, _temporal_conv/_norm1, _spatial_conv/_norm2, _expand_conv/_norm3) is
written here by hand; test_import_checkpoint checks it against tests/data/
model_garden_r3d50_variables.json, the variable list of the real Model Garden model
(tools/model_garden_reference.py). The forward pass follows official/vision/modeling/layers/
nn_blocks_3d.py BottleneckBlock3D.call and backbones/resnet_3d.py in inference mode.
"""
import os

import numpy as np
import tensorflow as tf

BLOCKS = {50: (3, 4, 6, 3)}
TEMPORAL_KERNELS = (1, 1, 3, 3)
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')


def _width(channels, multiplier):
  return max(1, int(round(channels * multiplier)))


class _Layer(tf.Module):
  pass


def _conv(rng, shape):
  layer = _Layer()
  layer.kernel = tf.Variable(rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
                             .astype(np.float32))
  return layer


def _bn(rng, channels):
  layer = _Layer()
  layer.gamma = tf.Variable(rng.uniform(0.5, 1.5, channels).astype(np.float32))
  layer.beta = tf.Variable(rng.normal(0, 0.1, channels).astype(np.float32))
  layer.moving_mean = tf.Variable(rng.normal(0, 0.1, channels).astype(np.float32))
  layer.moving_variance = tf.Variable(rng.uniform(0.5, 2.0, channels).astype(np.float32))
  return layer


def model_garden_backbone(width=1 / 16, stem_kt=5, seed=0, depth=50):
  """A tf.Module whose checkpoint has the Model Garden ResNet3D's object paths; random values."""
  rng = np.random.default_rng(seed)
  backbone = tf.Module()
  layers = []
  stem = _width(64, width)
  layers.append(_conv(rng, (stem_kt, 7, 7, 3, stem)))
  layers.append(_bn(rng, stem))
  channels = stem
  for stage, num_blocks in enumerate(BLOCKS[depth]):
    filters = _width(64 * 2**stage, width)
    for block in range(num_blocks):
      layer = _Layer()
      if block == 0:
        layer._shortcut_conv = _conv(rng, (1, 1, 1, channels, 4 * filters))
        layer._norm0 = _bn(rng, 4 * filters)
      layer._temporal_conv = _conv(rng, (TEMPORAL_KERNELS[stage], 1, 1, channels, filters))
      layer._norm1 = _bn(rng, filters)
      layer._spatial_conv = _conv(rng, (1, 3, 3, filters, filters))
      layer._norm2 = _bn(rng, filters)
      layer._expand_conv = _conv(rng, (1, 1, 1, filters, 4 * filters))
      layer._norm3 = _bn(rng, 4 * filters)
      layers.append(layer)
      channels = 4 * filters
  for i, layer in enumerate(layers):
    setattr(backbone, f'layer_with_weights-{i}', layer)
  backbone.num_layers = len(layers)
  return backbone


def save_checkpoint(backbone, directory):
  """tf.train.Checkpoint(backbone=...).save(): the released CVRL backbones' layout."""
  return tf.train.Checkpoint(backbone=backbone).save(os.path.join(directory, 'ckpt'))


def _bn_apply(x, layer, epsilon):
  return tf.nn.batch_normalization(x, layer.moving_mean, layer.moving_variance, layer.beta,
                                   layer.gamma, epsilon)


def _conv_apply(x, layer, strides, padding='SAME'):
  return tf.nn.conv3d(x, layer.kernel, [1, *strides, 1], padding)


def model_garden_features(backbone, clips, *, epsilon=1e-3, stem_stride=2):
  """Pooled features of the Model Garden ResNet3D (stem pool temporal stride 1, BN inference)."""
  layers = [getattr(backbone, f'layer_with_weights-{i}') for i in range(backbone.num_layers)]
  x = tf.constant(clips)
  x = tf.nn.relu(_bn_apply(_conv_apply(x, layers[0], (stem_stride, 2, 2)), layers[1], epsilon))
  x = tf.nn.max_pool3d(x, [1, 1, 3, 3, 1], [1, 1, 2, 2, 1], 'SAME')
  index = 2
  for stage, num_blocks in enumerate(BLOCKS[50]):
    for block in range(num_blocks):
      layer = layers[index]
      s = 2 if stage > 0 and block == 0 else 1
      if hasattr(layer, '_shortcut_conv'):  # Keras' default 'valid' padding for the 1x1x1 conv
        shortcut = _bn_apply(_conv_apply(x, layer._shortcut_conv, (1, s, s), 'VALID'),
                             layer._norm0, epsilon)
      else:
        shortcut = x
      y = tf.nn.relu(_bn_apply(_conv_apply(x, layer._temporal_conv, (1, 1, 1)), layer._norm1,
                               epsilon))
      y = tf.nn.relu(_bn_apply(_conv_apply(y, layer._spatial_conv, (1, s, s)), layer._norm2,
                               epsilon))
      y = _bn_apply(_conv_apply(y, layer._expand_conv, (1, 1, 1)), layer._norm3, epsilon)
      x = tf.nn.relu(y + shortcut)
      index += 1
  return tf.reduce_mean(x, axis=(1, 2, 3)).numpy()
