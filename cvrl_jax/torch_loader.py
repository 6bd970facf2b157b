"""Load a cvrl_jax PyTorch export (python -m cvrl_jax.export_torch) into pytorchvideo's ResNet.

This file is standalone: the export copies it next to the weights as `cvrl_torch_loader.py`, and
it needs only torch, pytorchvideo and safetensors (no JAX, no cvrl_jax).

    import torch
    from cvrl_torch_loader import load_model
    model = load_model('EXPORT_DIR')     # eval mode
    clips = torch.rand(2, 3, 16, 224, 224)  # [N, 3, T, H, W], RGB in [0, 1] (cvrl_jax: NTHWC)
    features = model(clips)              # [N, 2048], the features cvrl_jax gives

`load_backbone(dir)` returns the bare `pytorchvideo.models.resnet.create_resnet(head=None)`
network (its output is the last stage's feature map, its state dict has create_resnet's names);
`load_model(dir)` adds the global average pool.

Padding: the weights were trained with TensorFlow/XLA 'SAME' padding, which for a stride-2
convolution or pool on an even-sized input pads one pixel more at the end than at the start;
PyTorch's `padding=k//2` pads both sides equally. Same weights, shifted sampling grid: features
differ by a few percent. So every convolution and pool here gets `padding=0` and a forward
pre-hook that pads its input the SAME way (zeros; -inf for max-pooling), computed from the input
size, which keeps the state dict's names and gives cvrl_jax's features to float32 rounding.
"""
import json
import math
import os

WEIGHTS_FILE = 'model.safetensors'
CONFIG_FILE = 'config.json'
FORMAT = 'cvrl_jax.torch/1'


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple:
  """(start, end) padding of TensorFlow/XLA 'SAME' for one dimension."""
  extent = (kernel - 1) * dilation + 1
  out = math.ceil(size / stride)
  total = max((out - 1) * stride + extent - size, 0)
  return total // 2, total - total // 2


def _triple(value) -> tuple:
  return tuple(value) if isinstance(value, (tuple, list)) else (value,) * 3


def use_same_padding(net) -> int:
  """Gives every Conv3d and MaxPool3d of `net` TF 'SAME' padding; returns how many it changed."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  def hook_for(module, value):
    kernel, stride = _triple(module.kernel_size), _triple(module.stride)
    dilation = _triple(module.dilation)

    def pad(mod, args):
      del mod
      x = args[0]
      pads = []
      for dim in (2, 1, 0):  # F.pad lists the last dimension first
        pads.extend(same_pads(x.shape[2 + dim], kernel[dim], stride[dim], dilation[dim]))
      return (F.pad(x, pads, value=value),) + tuple(args[1:])
    return pad

  count = 0
  for module in net.modules():
    if isinstance(module, torch.nn.Conv3d):
      value = 0.0
      module.padding = (0, 0, 0)
    elif isinstance(module, torch.nn.MaxPool3d):
      value = float('-inf')
      module.padding = 0
    else:
      continue
    module.register_forward_pre_hook(hook_for(module, value))
    count += 1
  return count


def read_config(directory: str) -> dict:
  with open(os.path.join(directory, CONFIG_FILE), encoding='utf-8') as f:
    config = json.load(f)
  if config.get('format') != FORMAT:
    raise ValueError(f'{directory}/{CONFIG_FILE} is of format {config.get("format")!r}, not '
                     f'{FORMAT!r}.')
  return config


def build_backbone(config: dict):
  """pytorchvideo's create_resnet for the export's config, SAME padding, without the head."""
  import torch  # pylint: disable=g-import-not-at-top
  from pytorchvideo.models import resnet  # pylint: disable=g-import-not-at-top
  kwargs = dict(config['create_resnet'])
  for key in ('stem_conv_kernel_size', 'stem_conv_stride', 'stem_pool_kernel_size',
              'stem_pool_stride'):
    kwargs[key] = tuple(kwargs[key])
  kwargs['stage_conv_a_kernel_size'] = tuple(tuple(k) for k in kwargs['stage_conv_a_kernel_size'])
  net = resnet.create_resnet(head=None, **kwargs)
  for module in net.modules():
    if isinstance(module, torch.nn.BatchNorm3d):
      module.eps = config['bn_epsilon']
      module.momentum = config['bn_momentum_torch']
  use_same_padding(net)
  return net


def load_backbone(directory: str):
  """The exported backbone (create_resnet names, output [N, C, T', H', W']), in eval mode."""
  from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
  config = read_config(directory)
  net = build_backbone(config)
  net.load_state_dict(load_file(os.path.join(directory, WEIGHTS_FILE)), strict=True)
  return net.eval()


def load_model(directory: str):
  """The exported backbone followed by the global average pool: clips -> features [N, C]."""
  import torch  # pylint: disable=g-import-not-at-top
  return torch.nn.Sequential(load_backbone(directory), torch.nn.AdaptiveAvgPool3d(1),
                             torch.nn.Flatten(1)).eval()
