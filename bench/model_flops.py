"""Forward FLOPs per clip of the R3D backbones from XLA's cost analysis, next to a count by hand.

  /work/venv/bin/python bench/model_flops.py                      # CVRL's input, 16 x 224 x 224
  /work/venv/bin/python bench/model_flops.py --models=50 --frames=32

Nothing is allocated: parameters and inputs are abstract (jax.eval_shape), the forward pass (BN in
inference mode, batch of one clip) is lowered and compiled, and `compiled.cost_analysis()` gives
the FLOPs XLA will execute. XLA counts a convolution's multiply-adds only where the kernel tap
falls inside the input, not on SAME zero padding, so its figure is below the dense count in the
next column (2 x multiply-adds of every conv from its kernel and output shapes, every tap counted:
what FLOP counters such as fvcore report, as GFLOPs = 2 x GMACs). The difference is padding at
the borders (largest for 3x3x3 kernels on 8 frames and on the 7x7 maps of stage 4), minus the
few FLOPs of BN, ReLU and pooling that XLA includes.
"""
import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name: (depth, width multiplier, stem temporal kernel, stem temporal stride)
MODELS = {
    '18': (18, 1.0, 5, 2),
    '34': (34, 1.0, 5, 2),
    '50': (50, 1.0, 5, 2),
    '101': (101, 1.0, 5, 2),
    '152': (152, 1.0, 5, 2),
    '152x2': (152, 2.0, 5, 2),
    'slow50': (50, 1.0, 1, 1),  # Slow-R50 as the rho-family uses it (8 frames at stride 8)
}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--models', default='18,50,101,152,152x2,slow50',
                 help=f'comma-separated, from {",".join(MODELS)}')
  p.add_argument('--frames', type=int, default=16, help='input frames (slow50 always uses 8)')
  p.add_argument('--size', type=int, default=224)
  p.add_argument('--conv-impl', default='conv3d', choices=('conv3d', 'factorized'))
  return p.parse_args(argv)


def conv_flops(model, variables, x_shape) -> int:
  """2 x multiply-adds of every Conv3D, from its kernel and output shapes."""
  import jax
  import jax.numpy as jnp
  from flax import traverse_util
  _, state = jax.eval_shape(
      lambda v: model.apply(v, jnp.zeros(x_shape), train=False, capture_intermediates=True,
                            mutable=['intermediates']), variables)
  outputs = traverse_util.flatten_dict(state['intermediates'])
  kernels = traverse_util.flatten_dict(variables['params'])
  total = 0
  for path, kernel in kernels.items():
    if path[-1] != 'kernel':
      continue
    (out,) = outputs[path[:-1] + ('__call__',)]
    positions = out.size // out.shape[-1]
    total += 2 * positions * kernel.size  # kernel.size = kt*kh*kw*C_in*C_out
  return total


def main(argv=None) -> None:
  args = parse_args(argv)
  sys.path.insert(0, REPO_ROOT)
  from cvrl_jax import models
  from cvrl_jax import startup
  startup.configure_process()
  import jax
  import jax.numpy as jnp

  print(f'{"model":10} {"input":>10} {"params (M)":>10} {"XLA GFLOPs":>11} '
        f'{"dense conv GFLOPs":>18} {"features":>9}')
  for name in args.models.split(','):
    depth, width, stem_kt, stem_st = MODELS[name]
    frames = 8 if name == 'slow50' else args.frames
    model = models.ResNet3D(depth=depth, width_multiplier=width, stem_temporal_kernel=stem_kt,
                            stem_temporal_stride=stem_st, dtype=jnp.float32,
                            conv_impl=args.conv_impl)
    x = jax.ShapeDtypeStruct((1, frames, args.size, args.size, 3), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape),
                                                  train=False))
    compiled = jax.jit(lambda v, clip: model.apply(v, clip, train=False)).lower(
        variables, x).compile()
    xla_flops = compiled.cost_analysis()['flops']
    params = sum(p.size for p in jax.tree.leaves(variables['params']))
    print(f'R3D-{name:6} {frames:>2}x{args.size}x{args.size} {params / 1e6:10.1f} '
          f'{xla_flops / 1e9:11.1f} {conv_flops(model, variables, x.shape) / 1e9:18.1f} '
          f'{model.num_features:9d}', flush=True)
  print('FLOPs per clip, forward only; a train step costs about 3x (forward, input and weight '
        'gradients).')


if __name__ == '__main__':
  main()
