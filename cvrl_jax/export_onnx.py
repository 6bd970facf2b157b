"""Export a backbone to ONNX: clips [N, T, H, W, 3] in [0, 1] -> features [N, C].

    python -m cvrl_jax.export_onnx --init_checkpoint=EXPORT_OR_WORKDIR --output=DIR

DIR receives `model.onnx` (opset 17) and `cvrl_jax_manifest.json`. The graph is written node by
node from the architecture of cvrl_jax.models.resnet3d (any depth, basic or bottleneck blocks):
Conv (weights in ONNX's (out, in, kt, kh, kw) layout, no bias) -> BatchNormalization (inference:
the running statistics) -> Relu, the stem's MaxPool, the residual Add and a ReduceMean over time
and space. Convolutions and the pool use auto_pad SAME_UPPER, ONNX's name for TensorFlow/XLA
'SAME' (the extra pixel of an even-sized stride-2 input is padded at the end), so batch size,
frames and frame size stay free, and the features are the JAX encoder's. Input and output keep
cvrl_jax's conventions: channels-last RGB clips in [0, 1] (the graph transposes them).
"""
from typing import Mapping

from absl import flags
import ml_collections
import numpy as np

from cvrl_jax import export_common
from cvrl_jax.models import resnet3d

WRITER = 'export_onnx'
MODEL_FILE = 'model.onnx'
OPSET = 17
INPUT_NAME = 'clips'
OUTPUT_NAME = 'features'


class _Graph:
  """Nodes and initializers of the ONNX graph under construction."""

  def __init__(self, params: Mapping, batch_stats: Mapping, epsilon: float):
    self.params, self.batch_stats, self.epsilon = params, batch_stats, epsilon
    self.nodes, self.initializers = [], []

  def _name(self, base: str) -> str:
    return f'{base}_{len(self.nodes)}'

  def constant(self, name: str, value: np.ndarray) -> str:
    from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
    self.initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
    return name

  def node(self, op: str, inputs: list, **attrs) -> str:
    from onnx import helper  # pylint: disable=g-import-not-at-top
    out = self._name(op.lower())
    self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
    return out

  def conv(self, x: str, path: str, kernel: tuple, strides: tuple) -> str:
    module = _lookup(self.params, path)
    weight = np.transpose(np.asarray(module['kernel']), (4, 3, 0, 1, 2))
    assert weight.shape[2:] == tuple(kernel), (path, weight.shape, kernel)
    w = self.constant(f'{path}/kernel', weight)
    return self.node('Conv', [x, w], kernel_shape=list(kernel), strides=list(strides),
                     auto_pad='SAME_UPPER')

  def bn(self, x: str, path: str) -> str:
    p, s = _lookup(self.params, path), _lookup(self.batch_stats, path)
    inputs = [self.constant(f'{path}/{name}', value) for name, value in
              (('scale', p['scale']), ('bias', p['bias']), ('mean', s['mean']),
               ('var', s['var']))]
    return self.node('BatchNormalization', [x] + inputs, epsilon=float(self.epsilon))

  def relu(self, x: str) -> str:
    return self.node('Relu', [x])


def _lookup(tree: Mapping, path: str) -> Mapping:
  for part in path.split('/'):
    tree = tree[part]
  return tree


def _bottleneck(g: _Graph, x: str, name: str, channels_in: int, filters: int, kt: int,
                stride: int) -> str:
  out_filters = filters * resnet3d.BOTTLENECK_EXPANSION
  y = g.relu(g.bn(g.conv(x, f'{name}/conv1', (kt, 1, 1), (1, 1, 1)), f'{name}/bn1'))
  y = g.relu(g.bn(g.conv(y, f'{name}/conv2', (1, 3, 3), (1, stride, stride)), f'{name}/bn2'))
  y = g.bn(g.conv(y, f'{name}/conv3', (1, 1, 1), (1, 1, 1)), f'{name}/bn3')
  shortcut = x
  if channels_in != out_filters or stride != 1:
    shortcut = g.bn(g.conv(x, f'{name}/shortcut_conv', (1, 1, 1), (1, stride, stride)),
                    f'{name}/shortcut_bn')
  return g.relu(g.node('Add', [y, shortcut]))


def _basic(g: _Graph, x: str, name: str, channels_in: int, filters: int, stride: int) -> str:
  y = g.relu(g.bn(g.conv(x, f'{name}/conv1', (3, 3, 3), (1, stride, stride)), f'{name}/bn1'))
  y = g.bn(g.conv(y, f'{name}/conv2', (3, 3, 3), (1, 1, 1)), f'{name}/bn2')
  shortcut = x
  if channels_in != filters or stride != 1:
    shortcut = g.bn(g.conv(x, f'{name}/shortcut_conv', (1, 1, 1), (1, stride, stride)),
                    f'{name}/shortcut_bn')
  return g.relu(g.node('Add', [y, shortcut]))


def build_model(variables: Mapping, model_cfg: ml_collections.ConfigDict):
  """The onnx.ModelProto of the backbone in `variables` (BN in inference mode)."""
  from onnx import checker, helper, TensorProto  # pylint: disable=g-import-not-at-top
  depth = int(model_cfg.depth)
  if depth not in resnet3d.BLOCK_COUNTS:
    raise export_common.ExportError(f'model.depth must be one of {sorted(resnet3d.BLOCK_COUNTS)},'
                                    f' got {depth}.')
  g = _Graph(variables['params'], variables['batch_stats'], float(model_cfg.bn_epsilon))
  m = float(model_cfg.width_multiplier)
  x = g.node('Transpose', [INPUT_NAME], perm=[0, 4, 1, 2, 3])  # NTHWC -> NCTHW
  x = g.conv(x, 'stem_conv', (int(model_cfg.stem_temporal_kernel), 7, 7),
             (int(model_cfg.stem_temporal_stride), 2, 2))
  x = g.relu(g.bn(x, 'stem_bn'))
  x = g.node('MaxPool', [x], kernel_shape=[1, 3, 3], strides=[1, 2, 2], auto_pad='SAME_UPPER')
  channels = resnet3d.scaled_width(resnet3d.STEM_WIDTH, m)
  bottleneck = depth in resnet3d.BOTTLENECK_DEPTHS
  for i, num_blocks in enumerate(resnet3d.BLOCK_COUNTS[depth]):
    filters = resnet3d.scaled_width(resnet3d.STAGE_WIDTHS[i], m)
    for j in range(num_blocks):
      stride = 2 if i > 0 and j == 0 else 1
      name = f'stage{i + 1}_block{j + 1}'
      if bottleneck:
        x = _bottleneck(g, x, name, channels, filters, resnet3d.BOTTLENECK_TEMPORAL_KERNELS[i],
                        stride)
        channels = filters * resnet3d.BOTTLENECK_EXPANSION
      else:
        x = _basic(g, x, name, channels, filters, stride)
        channels = filters
  features = g.node('ReduceMean', [x], axes=[2, 3, 4], keepdims=0)
  g.nodes[-1].output[0] = OUTPUT_NAME
  del features
  inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                          ['batch', 'frames', 'height', 'width', 3])]
  outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ['batch', channels])]
  graph = helper.make_graph(g.nodes, f'cvrl_jax_r3d{depth}', inputs, outputs,
                            initializer=g.initializers)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)],
                            producer_name='cvrl_jax')
  model.ir_version = 8  # readable by onnxruntime releases of the last years
  checker.check_model(model)
  return model


def export_onnx(init_checkpoint: str, output: str) -> str:
  _, variables, model_cfg = export_common.load_checkpoint(init_checkpoint)
  export_common.check_finite(export_common.flat_variables(variables).items(),
                             f'ONNX export of {init_checkpoint}')
  model = build_model(variables, model_cfg)
  out = export_common.OutputDir(output, WRITER)
  out.write_bytes(MODEL_FILE, model.SerializeToString())
  return out.finish({'source': init_checkpoint,
                     'model': export_common.architecture(model_cfg)})


def _define_flags() -> None:
  export_common.define_checkpoint_flags('Folder for the ONNX export (new, empty, or an earlier '
                                        'ONNX export).')


def main(argv) -> None:
  f = flags.FLAGS
  export_common.run(lambda: f'Exported {f.init_checkpoint} to ONNX in '
                            f'{export_onnx(f.init_checkpoint, f.output)}', argv)


if __name__ == '__main__':
  export_common.start(_define_flags, main)
