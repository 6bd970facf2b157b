"""Collectives of the compiled pretraining step over fake CPU devices, next to what data
parallelism needs.

  /work/venv/bin/python bench/collectives.py    # configs/demo.py: R3D-18 x 1/4, 32 x 8 x 32^2
  /work/venv/bin/python bench/collectives.py --config=cvrl_r3d50_k400 --frames=4 --size=32 \
      --batch=16

The train step (train_step.build_train_step: augment, forward, backward, optimiser) is compiled for a
('data',) mesh of --devices fake CPU devices on abstract inputs (nothing runs), and every
collective of the optimised HLO (`compiled.as_text()`, the per-device program after SPMD
partitioning) is listed: all-reduce, all-gather, reduce-scatter, all-to-all, collective-permute,
each counted once (an async pair by its -done op), with the bytes of its result (a combined
all-reduce: the sum of its buffers; a reduce-scatter: the shard it leaves on a device).

What data parallelism needs, derived from the state tree and the config, not from the HLO:
  gradients     one all-reduce of every trainable parameter's gradient: the parameter bytes;
  BN            per BatchNorm channel, the batch mean and variance in the forward pass and two
                per-channel sums in the backward pass (4 float32 per channel): synced BN;
  negatives     the projections of the global batch (batch x clips x dim x 4 bytes) gathered
                for the contrastive loss, and the reduction of their gradient on the way back;
  metrics       a few scalars.
No activation should be gathered and nothing should need an all-to-all.
"""
import argparse
import dataclasses
import importlib.util
import os
import re
import sys
from typing import Any, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute')
DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2, 's32': 4,
               'u32': 4, 'f32': 4, 's64': 8, 'u64': 8, 'f64': 8, 'c64': 8, 'c128': 16}
_OP = re.compile(r'^\s*(?:ROOT\s+)?%?(?P<name>\S+)\s*=\s*(?P<type>.*?)\s+'
                 r'(?P<kind>' + '|'.join(KINDS) + r')(?P<async>-start|-done)?\(')
_ARRAY = re.compile(r'\b(' + '|'.join(DTYPE_BYTES) + r')\[([0-9,]*)\]')
_OP_NAME = re.compile(r'op_name="([^"]*)"')


@dataclasses.dataclass(frozen=True)
class Collective:
  kind: str  # one of KINDS
  name: str  # the HLO instruction name
  buffers: tuple[tuple[str, tuple[int, ...]], ...]  # (dtype, shape) of each result buffer
  op_name: str  # JAX's op_name metadata ('' when absent)

  @property
  def bytes(self) -> int:
    total = 0
    for dtype, shape in self.buffers:
      size = 1
      for d in shape:
        size *= d
      total += size * DTYPE_BYTES[dtype]
    return total

  @property
  def phase(self) -> str:
    """'forward', 'backward' (under JAX's transpose) or 'both' (XLA combined several ops)."""
    backward = self.op_name.count('transpose(jvp(')
    forward = self.op_name.count('jvp(') - backward
    return 'both' if backward and forward else 'backward' if backward else 'forward'


def parse_buffers(type_str: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
  """'(f32[8]{0}, bf16[2,3]{1,0})' -> (('f32', (8,)), ('bf16', (2, 3)))."""
  return tuple((dtype, tuple(int(d) for d in dims.split(',') if d))
               for dtype, dims in _ARRAY.findall(type_str))


def parse_collectives(hlo_text: str) -> list[Collective]:
  """Every collective of an HLO module's text, once each (async pairs by their -done op)."""
  found = []
  for line in hlo_text.splitlines():
    m = _OP.match(line)
    if m is None or m.group('async') == '-start':
      continue
    op_name = _OP_NAME.search(line)
    found.append(Collective(kind=m.group('kind'), name=m.group('name'),
                            buffers=parse_buffers(m.group('type')),
                            op_name=op_name.group(1) if op_name else ''))
  return found


def tree_bytes(tree: Any) -> int:
  import jax
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def bn_channels(batch_stats: Any) -> int:
  """Channels of every BatchNorm layer: the sizes of the 'mean' entries of the BN statistics."""
  import jax
  total = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(batch_stats)[0]:
    if getattr(path[-1], 'key', None) == 'mean':
      total += leaf.size
  return total


def expected_bytes(parts: Any, config: Any, num_clips: int) -> dict[str, int]:
  """What data parallelism moves per step, from the state tree and the config."""
  state = parts.abstract_state
  channels = bn_channels(state.batch_stats)
  return {
      'gradients': tree_bytes(state.params),
      'bn_forward': 2 * channels * 4,  # batch mean and variance, float32
      'bn_backward': 2 * channels * 4,  # sum(dy) and sum(dy * x_hat), float32
      'embeddings': config.batch_size * num_clips * config.objective.head_output_dim * 4,
      'bn_channels': channels,
  }


def load_config(name: str):
  path = os.path.join(REPO_ROOT, 'configs', f'{name}.py')
  if not os.path.isfile(path):
    raise SystemExit(f'No config {path}; --config takes the name of a file in configs/.')
  spec = importlib.util.spec_from_file_location(f'cvrl_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def audit(config: Any, num_devices: int) -> tuple[list[Collective], dict[str, int], Any]:
  """Compiles the train step of `config` over a ('data',) mesh of `num_devices` devices; returns
  its collectives, the expected figures and the train_step.TrainStepParts."""
  import jax
  from jax.sharding import AxisType
  from cvrl_jax import sharding
  from cvrl_jax import train_step
  from cvrl_jax.objectives import build_objective

  if jax.device_count() < num_devices:
    raise ValueError(f'{num_devices} devices asked for, {jax.device_count()} present: set '
                     f'XLA_FLAGS=--xla_force_host_platform_device_count={num_devices} before JAX '
                     'starts.')
  mesh = jax.make_mesh((num_devices, 1), sharding.AXES, axis_types=(AxisType.Auto,) * 2,
                       devices=jax.devices()[:num_devices])
  objective = build_objective(config)
  parts = train_step.build_train_step(config, mesh, objective, num_steps=1000, steps_per_epoch=100.0)
  compiled = parts.compile()
  return (parse_collectives(compiled.as_text()),
          expected_bytes(parts, config, objective.plan.num_views), parts)


def summary_rows(collectives: Sequence[Collective]) -> list[tuple[str, str, int, int, int]]:
  """(kind, phase, ops, buffers, bytes) per kind and phase, in KINDS order."""
  rows = []
  for kind in KINDS:
    for phase in ('forward', 'backward', 'both'):
      group = [c for c in collectives if c.kind == kind and c.phase == phase]
      if group:
        rows.append((kind, phase, len(group), sum(len(c.buffers) for c in group),
                     sum(c.bytes for c in group)))
  return rows


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--config', default='demo', help='name of a file in configs/')
  p.add_argument('--devices', type=int, default=8)
  p.add_argument('--batch', type=int, default=0, help='global batch in videos (0: config)')
  p.add_argument('--frames', type=int, default=0, help='data.num_frames (0: config)')
  p.add_argument('--size', type=int, default=0, help='data.image_size (0: config)')
  p.add_argument('--list', action='store_true', help='also print every collective')
  return p.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  flag = f'--xla_force_host_platform_device_count={args.devices}'
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + flag).strip()
  sys.path.insert(0, REPO_ROOT)
  from cvrl_jax import startup
  startup.configure_process()

  config = load_config(args.config)
  with config.unlocked():
    config.model.conv_impl = 'conv3d'
    config.mesh.data, config.mesh.fsdp = args.devices, 1
    for key, value in (('batch_size', args.batch), ('data.num_frames', args.frames),
                       ('data.image_size', args.size)):
      if value:
        *parents, leaf = key.split('.')
        node = config
        for parent in parents:
          node = node[parent]
        node[leaf] = value
  collectives, expected, _ = audit(config, args.devices)

  print(f'{args.config}: R3D-{config.model.depth} x {config.model.width_multiplier:g}, batch '
        f'{config.batch_size} x {config.data.num_frames} x {config.data.image_size}^2, '
        f'{args.devices} devices (data parallel), model dtype {config.model.dtype}')
  print(f'\n{"collective":20} {"phase":9} {"ops":>5} {"buffers":>8} {"bytes/step":>12}')
  for kind, phase, ops, buffers, nbytes in summary_rows(collectives):
    print(f'{kind:20} {phase:9} {ops:>5} {buffers:>8} {nbytes:>12,}')
  total = {k: sum(c.bytes for c in collectives if c.kind == k) for k in KINDS}
  gather_max = max((c.bytes for c in collectives if c.kind == 'all-gather'), default=0)
  bn = expected['bn_forward'] + expected['bn_backward']
  print(f'\nexpected for data parallelism ({expected["bn_channels"]:,} BN channels):')
  print(f'  gradient all-reduce = trainable parameter bytes  {expected["gradients"]:>12,}')
  print(f'  BN forward (mean, var) + backward (2 sums)       {bn:>12,}')
  print(f'  projections of the global batch (negatives)      {expected["embeddings"]:>12,}')
  print('\nmeasured:')
  print(f'  all-reduce total                                 {total["all-reduce"]:>12,}'
        f'  = {total["all-reduce"] / expected["gradients"]:.3f} x parameters, '
        f'{(total["all-reduce"] - expected["gradients"] - bn):+,} beyond gradients + BN')
  print(f'  all-gather total / largest                       {total["all-gather"]:>12,}'
        f' / {gather_max:,}')
  for kind in ('reduce-scatter', 'all-to-all', 'collective-permute'):
    print(f'  {kind:47} {total[kind]:>12,}')
  if args.list:
    print()
    for c in collectives:
      print(f'{c.kind:20} {c.phase:9} {c.bytes:>12,}  {c.op_name[:110]}')


if __name__ == '__main__':
  main()
