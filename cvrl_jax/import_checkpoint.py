"""Import a TF Model Garden R3D checkpoint (the released CVRL weights) as a cvrl_jax backbone.

    python -m cvrl_jax.import_checkpoint --from=model_garden --checkpoint=PATH --output=DIR

PATH is a TF2 checkpoint (a prefix such as `r3d_1x_k600_800ep_backbone-1`, or a folder whose
`checkpoint` file names one) of the Model Garden's `ResNet3D` backbone (official/vision, as
used by official/projects/video_ssl): the released CVRL backbones, or a video_ssl / video
classification training checkpoint, whose backbone is found by its stem. DIR receives a cvrl_jax
backbone export (cvrl_jax.export) that evaluation jobs take as `config.init_checkpoint`.

The Model Garden backbone is the same network as ours (docs/weights.md): a Keras functional
model whose layers with weights are, in order, the stem Conv3D, the stem BatchNormalization and
one BottleneckBlock3D per block, each holding `_shortcut_conv`/`_norm0` (first block of a stage),
`_temporal_conv`/`_norm1`, `_spatial_conv`/`_norm2`, `_expand_conv`/`_norm3`. Keras' Conv3D kernel
is (kt, kh, kw, in, out), the layout of ours, and TF's 'same' padding is XLA's, so the weights are
copied as they are; BN gamma/beta/moving_mean/moving_variance become scale/bias/mean/var, and
Keras' BN momentum is Flax's (both weigh the old running average by it). The checkpoint stores
neither BN epsilon nor the stem's temporal stride: the flags give them (Model Garden defaults).

Every backbone variable must map to a cvrl_jax variable and every cvrl_jax variable must be in the
checkpoint, or the import stops naming what is left over. Variables outside the backbone (a
projection head, a classifier, optimizer slots, counters) are counted and skipped.
"""
import dataclasses
import re
from typing import Any, Dict, Mapping, Optional, Tuple

from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np

from cvrl_jax import config_lib
from cvrl_jax import export
from cvrl_jax import export_common
from cvrl_jax import models
from cvrl_jax.models import resnet3d

SOURCES = ('model_garden',)
VALUE_SUFFIX = '/.ATTRIBUTES/VARIABLE_VALUE'
OPTIMIZER_SLOT = '/.OPTIMIZER_SLOT/'
STEM_KEY = 'layer_with_weights-0/kernel' + VALUE_SUFFIX
# Model Garden defaults of the backbone's BN (official/vision/configs/common.py NormActivation:
# norm_momentum 0.99, norm_epsilon 0.001; the CVRL experiments keep them) and of the stem's
# temporal stride (stem_conv_temporal_stride 2 in the CVRL configs).
MODEL_GARDEN_BN_EPSILON = 1e-3
MODEL_GARDEN_BN_MOMENTUM = 0.99
MODEL_GARDEN_STEM_TEMPORAL_STRIDE = 2

BN_NAMES = {'scale': ('params', 'gamma'), 'bias': ('params', 'beta'),
            'mean': ('batch_stats', 'moving_mean'), 'var': ('batch_stats', 'moving_variance')}
# Our bottleneck block's submodules -> BottleneckBlock3D's attributes.
BOTTLENECK_NAMES = {'conv1': '_temporal_conv', 'bn1': '_norm1', 'conv2': '_spatial_conv',
                    'bn2': '_norm2', 'conv3': '_expand_conv', 'bn3': '_norm3',
                    'shortcut_conv': '_shortcut_conv', 'shortcut_bn': '_norm0'}


@dataclasses.dataclass(frozen=True)
class VariableMap:
  """One cvrl_jax variable ('params/stem_conv/kernel') and its checkpoint key."""
  ours: str
  theirs: str


def _conv(ours: str, theirs: str) -> list:
  return [VariableMap(f'params/{ours}/kernel', f'{theirs}/kernel{VALUE_SUFFIX}')]


def _bn(ours: str, theirs: str) -> list:
  return [VariableMap(f'{collection}/{ours}/{name}', f'{theirs}/{keras}{VALUE_SUFFIX}')
          for name, (collection, keras) in BN_NAMES.items()]


def model_garden_mapping(model_cfg: ml_collections.ConfigDict, prefix: str = '') -> list:
  """Every variable of a bottleneck R3D of `model_cfg` with its Model Garden checkpoint key."""
  depth = int(model_cfg.depth)
  if depth not in resnet3d.BOTTLENECK_DEPTHS:
    raise export_common.ExportError(
        f'The Model Garden ResNet3D has bottleneck blocks only; R3D-{depth} has none.')
  layer = lambda i: f'{prefix}layer_with_weights-{i}'
  out = _conv('stem_conv', layer(0)) + _bn('stem_bn', layer(1))
  index = 2
  for stage, num_blocks in enumerate(resnet3d.BLOCK_COUNTS[depth]):
    for block in range(num_blocks):
      ours = f'stage{stage + 1}_block{block + 1}'
      for sub, keras in BOTTLENECK_NAMES.items():
        if sub.startswith('shortcut') and block > 0:
          continue  # only a stage's first block changes the shape
        add = _conv if 'conv' in sub else _bn
        out += add(f'{ours}/{sub}', f'{layer(index)}/{keras}')
      index += 1
  return out


# ------------------------------------------------------------------------------------------------
# Reading the checkpoint.
# ------------------------------------------------------------------------------------------------
def read_shapes(checkpoint: str) -> Tuple[Any, Dict[str, Tuple[int, ...]]]:
  """(reader, {key: shape}) of a TF checkpoint, or one sentence naming `checkpoint`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    reader = tf.train.load_checkpoint(checkpoint)
  except (tf.errors.OpError, ValueError) as e:
    raise FileNotFoundError(
        f'{checkpoint} is not a readable TensorFlow checkpoint (give the checkpoint prefix, such '
        f'as DIR/ckpt-1, or a folder with a "checkpoint" file).') from e
  shapes = {key: tuple(shape) for key, shape in reader.get_variable_to_shape_map().items()}
  return reader, shapes


def find_prefix(shapes: Mapping[str, Tuple[int, ...]], checkpoint: str) -> str:
  """The object path of the backbone: the shortest prefix of a stem kernel [kt, 7, 7, 3, C]."""
  prefixes = [key[:-len(STEM_KEY)] for key, shape in shapes.items()
              if key.endswith(STEM_KEY) and OPTIMIZER_SLOT not in key and len(shape) == 5
              and shape[1:4] == (7, 7, 3)]
  if not prefixes:
    raise ValueError(f'{checkpoint} holds no Model Garden ResNet3D backbone (no variable '
                     f'.../{STEM_KEY} of shape [kt, 7, 7, 3, C]).')
  return min(prefixes, key=lambda p: (p.count('/'), p))


def infer_model_config(shapes: Mapping[str, Tuple[int, ...]], prefix: str, checkpoint: str, *,
                       stem_temporal_stride: int, bn_epsilon: float, bn_momentum: float
                       ) -> ml_collections.ConfigDict:
  """config.model of the checkpoint's backbone: depth from the block count, width and stem
  kernel from the stem's kernel; the rest from the flags (the checkpoint does not store it)."""
  pattern = re.compile(re.escape(prefix) + r'layer_with_weights-(\d+)/')
  layers = {int(m.group(1)) for key in shapes if OPTIMIZER_SLOT not in key
            for m in [pattern.match(key)] if m}
  num_blocks = len(layers) - 2
  depths = [d for d in resnet3d.BOTTLENECK_DEPTHS if sum(resnet3d.BLOCK_COUNTS[d]) == num_blocks]
  if not depths:
    raise ValueError(f'{checkpoint}: the backbone at {prefix or "the root"} has {num_blocks} '
                     f'blocks, which is no R3D depth in {list(resnet3d.BOTTLENECK_DEPTHS)}.')
  stem = shapes[prefix + STEM_KEY]
  cfg = config_lib.model_config()
  cfg.depth = depths[0]
  cfg.width_multiplier = stem[-1] / resnet3d.STEM_WIDTH
  cfg.stem_temporal_kernel = int(stem[0])
  cfg.stem_temporal_stride = int(stem_temporal_stride)
  cfg.bn_epsilon = float(bn_epsilon)
  cfg.bn_momentum = float(bn_momentum)
  cfg.dtype = 'float32'
  return cfg


def _nest(flat: Mapping[str, np.ndarray]) -> dict:
  tree: dict = {'params': {}, 'batch_stats': {}}
  for name, value in flat.items():
    node = tree
    *parents, leaf = name.split('/')
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


@dataclasses.dataclass
class ImportResult:
  variables: dict
  model_cfg: ml_collections.ConfigDict
  prefix: str
  num_mapped: int
  skipped: Dict[str, int]


def read_model_garden(checkpoint: str, *, stem_temporal_stride: int =
                      MODEL_GARDEN_STEM_TEMPORAL_STRIDE, bn_epsilon: float =
                      MODEL_GARDEN_BN_EPSILON, bn_momentum: float = MODEL_GARDEN_BN_MOMENTUM,
                      prefix: Optional[str] = None) -> ImportResult:
  """The backbone variables of a Model Garden checkpoint as cvrl_jax {'params', 'batch_stats'}."""
  reader, shapes = read_shapes(checkpoint)
  prefix = find_prefix(shapes, checkpoint) if prefix is None else prefix
  model_cfg = infer_model_config(shapes, prefix, checkpoint,
                                 stem_temporal_stride=stem_temporal_stride,
                                 bn_epsilon=bn_epsilon, bn_momentum=bn_momentum)
  mapping = model_garden_mapping(model_cfg, prefix)
  missing = [m.theirs for m in mapping if m.theirs not in shapes]
  if missing:
    raise ValueError(f'{checkpoint} lacks {len(missing)} variable(s) of an '
                     f'{export.describe(model_cfg)} backbone, first {missing[0]}.')
  backbone_keys = {key for key in shapes if key.startswith(prefix) and key.endswith(VALUE_SUFFIX)
                   and OPTIMIZER_SLOT not in key and pattern_in_backbone(key, prefix)}
  left_over = sorted(backbone_keys - {m.theirs for m in mapping})
  if left_over:
    raise ValueError(f'{checkpoint}: {len(left_over)} backbone variable(s) map to nothing in an '
                     f'{export.describe(model_cfg)} backbone: {", ".join(left_over[:3])}'
                     f'{", ..." if len(left_over) > 3 else ""}.')
  flat = {m.ours: np.asarray(reader.get_tensor(m.theirs), np.float32) for m in mapping}
  export_common.check_finite(flat.items(), f'{checkpoint}')
  variables = _nest(flat)
  backbone = models.build_backbone(model_cfg)
  expected = export.abstract_variables(
      backbone, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  export.check_shapes(variables, expected, checkpoint, model_cfg)
  others = sorted(set(shapes) - backbone_keys)
  skipped = {'optimizer slots': sum(OPTIMIZER_SLOT in k for k in others),
             'other variables': sum(OPTIMIZER_SLOT not in k for k in others)}
  return ImportResult(variables, model_cfg, prefix, len(mapping), skipped)


def pattern_in_backbone(key: str, prefix: str) -> bool:
  """Is `key` inside one of the backbone's layers (not, say, a save counter beside it)?"""
  return key[len(prefix):].startswith('layer_with_weights-')


def import_model_garden(checkpoint: str, output: str, **kwargs) -> Tuple[str, ImportResult]:
  """Reads the checkpoint and writes the cvrl_jax backbone export to `output` (new or empty)."""
  writer = 'import_checkpoint'
  output = export_common.require_new_folder(output, writer)
  result = read_model_garden(checkpoint, **kwargs)
  source = {'imported_from': 'model_garden', 'checkpoint': checkpoint, 'prefix': result.prefix,
            'variables_mapped': result.num_mapped, 'skipped': result.skipped}
  path = export.export_backbone(output, jax.device_put(result.variables), result.model_cfg, source)
  logging.info('Imported %d variables (skipped %s) from %s.', result.num_mapped, result.skipped,
               checkpoint)
  return path, result


# ------------------------------------------------------------------------------------------------
# Command line.
# ------------------------------------------------------------------------------------------------
def _define_flags() -> None:
  flags.DEFINE_enum('from', 'model_garden', SOURCES, 'Where the checkpoint comes from.')
  flags.DEFINE_string('checkpoint', None, 'The TensorFlow checkpoint (prefix or folder).',
                      required=True)
  flags.DEFINE_string('output', None, 'Folder for the cvrl_jax backbone export (new or empty).',
                      required=True)
  flags.DEFINE_integer('stem_temporal_stride', MODEL_GARDEN_STEM_TEMPORAL_STRIDE,
                       "The stem conv's temporal stride (not stored in the checkpoint).")
  flags.DEFINE_float('bn_epsilon', MODEL_GARDEN_BN_EPSILON,
                     "The backbone BN's epsilon (norm_epsilon; not stored in the checkpoint).")
  flags.DEFINE_float('bn_momentum', MODEL_GARDEN_BN_MOMENTUM,
                     "The backbone BN's momentum for fine-tuning (norm_momentum).")
  flags.DEFINE_string('prefix', None, 'Object path of the backbone in the checkpoint (default: '
                      'found from the stem kernel), e.g. "backbone/".')


def main(argv) -> None:
  f = flags.FLAGS

  def body() -> str:
    path, result = import_model_garden(
        f.checkpoint, f.output, stem_temporal_stride=f.stem_temporal_stride,
        bn_epsilon=f.bn_epsilon, bn_momentum=f.bn_momentum, prefix=f.prefix)
    return (f'Imported the {export.describe(result.model_cfg)} backbone of {f.checkpoint} '
            f'({result.num_mapped} variables) to {path}')
  export_common.run(body, argv)


if __name__ == '__main__':
  export_common.start(_define_flags, main)
