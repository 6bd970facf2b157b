"""Export a backbone to PyTorch: a safetensors state dict with pytorchvideo's create_resnet names.

    python -m cvrl_jax.export_torch --init_checkpoint=EXPORT_OR_WORKDIR --output=DIR

DIR receives
  model.safetensors      the state dict of `pytorchvideo.models.resnet.create_resnet(head=None)`
                         for this R3D (bottleneck depths 50/101/152), float32, BN statistics and
                         `num_batches_tracked` included;
  config.json            the create_resnet arguments, BN epsilon and PyTorch momentum, the
                         input convention, and the cvrl_jax model config it came from;
  cvrl_torch_loader.py   a standalone loader (cvrl_jax/torch_loader.py) that builds the model
                         with TF-style SAME padding, the only way it gives our features (its
                         docstring says why), and loads the weights;
  cvrl_jax_manifest.json the files written (an export re-run replaces only those).

Conversions: a kernel (kt, kh, kw, in, out) becomes PyTorch's (out, in, kt, kh, kw); BN
scale/bias/mean/var become weight/bias/running_mean/running_var; Flax's BN momentum m (weight of
the old running average) is PyTorch's 1 - m. Blocks map to create_resnet's as
stage{s}_block{b} -> blocks.{s}.res_blocks.{b-1}, conv1/bn1 -> branch2.conv_a/norm_a (the
(kt, 1, 1) conv), conv2/bn2 -> conv_b/norm_b (the strided (1, 3, 3)), conv3/bn3 -> conv_c/norm_c,
shortcut_conv/bn -> branch1_conv/norm.

torchvision's r3d_18 is not our R3D-18: it has no max-pool after the stem, a (3, 7, 7) stride
(1, 2, 2) stem, and strides its stages 2-4 in time as well; pytorchvideo's create_resnet has no
basic-block depths. Basic-block backbones export to ONNX and TensorFlow instead.
"""
import inspect
import json
from typing import Mapping

from absl import flags
import ml_collections
import numpy as np

from cvrl_jax import export_common
from cvrl_jax import torch_loader
from cvrl_jax.models import resnet3d

WRITER = 'export_torch'
LOADER_FILE = 'cvrl_torch_loader.py'
BN_TORCH_NAMES = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
                  'var': 'running_var'}
BLOCK_TORCH_NAMES = {'conv1': 'branch2.conv_a', 'bn1': 'branch2.norm_a',
                     'conv2': 'branch2.conv_b', 'bn2': 'branch2.norm_b',
                     'conv3': 'branch2.conv_c', 'bn3': 'branch2.norm_c',
                     'shortcut_conv': 'branch1_conv', 'shortcut_bn': 'branch1_norm'}


def check_supported(model_cfg: ml_collections.ConfigDict) -> None:
  depth = int(model_cfg.depth)
  if depth not in resnet3d.BOTTLENECK_DEPTHS:
    raise export_common.ExportError(
        f'PyTorch export covers pytorchvideo create_resnet depths {resnet3d.BOTTLENECK_DEPTHS}; '
        f'R3D-{depth} has basic blocks (export it to ONNX or TensorFlow instead).')
  m = float(model_cfg.width_multiplier)
  stem = resnet3d.scaled_width(resnet3d.STEM_WIDTH, m)
  widths = [resnet3d.scaled_width(w, m) for w in resnet3d.STAGE_WIDTHS]
  if widths != [stem * 2**i for i in range(4)]:
    raise export_common.ExportError(
        f'create_resnet doubles the stem width per stage, but width multiplier {m:g} gives '
        f'stage widths {widths} from a stem of {stem}.')


def torch_name(ours: str) -> str:
  """'params/stage2_block1/conv1/kernel' -> 'blocks.2.res_blocks.0.branch2.conv_a.weight'."""
  _, module, *rest = ours.split('/')
  if module in ('stem_conv', 'stem_bn'):
    layer, leaf = ('blocks.0.conv' if module == 'stem_conv' else 'blocks.0.norm'), rest[-1]
  else:
    stage, block = module.replace('stage', '').split('_block')
    layer = f'blocks.{stage}.res_blocks.{int(block) - 1}.{BLOCK_TORCH_NAMES[rest[0]]}'
    leaf = rest[-1]
  return f'{layer}.{"weight" if leaf == "kernel" else BN_TORCH_NAMES[leaf]}'


def to_torch_layout(name: str, value: np.ndarray) -> np.ndarray:
  """A conv kernel (kt, kh, kw, in, out) -> (out, in, kt, kh, kw); BN vectors unchanged."""
  if name.endswith('/kernel'):
    return np.ascontiguousarray(np.transpose(value, (4, 3, 0, 1, 2)))
  return value


def state_dict(variables: Mapping, model_cfg: ml_collections.ConfigDict) -> dict:
  """{create_resnet name: float32 array} (and int64 num_batches_tracked, 0) of a backbone."""
  check_supported(model_cfg)
  out = {}
  for name, value in export_common.flat_variables(variables).items():
    out[torch_name(name)] = to_torch_layout(name, np.asarray(value, np.float32))
    if name.endswith('/var'):
      out[torch_name(name).replace('running_var', 'num_batches_tracked')] = np.zeros((), np.int64)
  return out


def create_resnet_kwargs(model_cfg: ml_collections.ConfigDict) -> dict:
  check_supported(model_cfg)
  return {
      'model_depth': int(model_cfg.depth),
      'stem_dim_out': resnet3d.scaled_width(resnet3d.STEM_WIDTH, model_cfg.width_multiplier),
      'stem_conv_kernel_size': [int(model_cfg.stem_temporal_kernel), 7, 7],
      'stem_conv_stride': [int(model_cfg.stem_temporal_stride), 2, 2],
      'stem_pool_kernel_size': [1, 3, 3],
      'stem_pool_stride': [1, 2, 2],
      'stage_conv_a_kernel_size': [[k, 1, 1] for k in resnet3d.BOTTLENECK_TEMPORAL_KERNELS],
  }


def export_config(model_cfg: ml_collections.ConfigDict) -> dict:
  return {
      'format': torch_loader.FORMAT,
      'create_resnet': create_resnet_kwargs(model_cfg),
      'bn_epsilon': float(model_cfg.bn_epsilon),
      'bn_momentum_torch': 1.0 - float(model_cfg.bn_momentum),
      'padding': 'TensorFlow SAME (cvrl_torch_loader.use_same_padding)',
      'input': '[N, 3, T, H, W] float32 RGB in [0, 1]',
      'output': 'create_resnet(head=None): [N, C, T, H, W]; load_model adds the mean over T, H, W',
      'cvrl_jax_model': model_cfg.to_dict(),
  }


def export_torch(init_checkpoint: str, output: str) -> str:
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  _, variables, model_cfg = export_common.load_checkpoint(init_checkpoint)
  check_supported(model_cfg)
  export_common.check_finite(export_common.flat_variables(variables).items(),
                             f'PyTorch export of {init_checkpoint}')
  tensors = state_dict(variables, model_cfg)
  out = export_common.OutputDir(output, WRITER)
  config = export_config(model_cfg)
  out.write_with(torch_loader.WEIGHTS_FILE, lambda tmp: save_file(
      tensors, tmp, metadata={'format': torch_loader.FORMAT, 'config': json.dumps(config)}))
  out.write_text(torch_loader.CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True) + '\n')
  out.write_text(LOADER_FILE, inspect.getsource(torch_loader))
  return out.finish({'source': init_checkpoint})


def _define_flags() -> None:
  export_common.define_checkpoint_flags('Folder for the PyTorch export (new, empty, or an earlier '
                                        'PyTorch export).')


def main(argv) -> None:
  f = flags.FLAGS
  export_common.run(lambda: f'Exported {f.init_checkpoint} for PyTorch to '
                            f'{export_torch(f.init_checkpoint, f.output)}', argv)


if __name__ == '__main__':
  export_common.start(_define_flags, main)
