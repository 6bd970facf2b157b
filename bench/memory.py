"""Compiled memory of the pretraining step per device, for several per-device batch sizes.

  /work/venv/bin/python bench/memory.py                        # R3D-50 and R3D-152 2x, 224^2
  /work/venv/bin/python bench/memory.py --configs=cvrl_r3d50_k400 --batches=1,2 --remat=off
  /work/venv/bin/python bench/memory.py --configs=cvrl_r3d152x2_k600 --batches=2 --fsdp=8

The train step of each configuration (augment, forward, backward, optimiser update: exactly what
cvrl_jax.trainer compiles, via train_step.build_train_step) is lowered and compiled for abstract
inputs only: no step runs and no state is allocated. XLA's `compiled.memory_analysis()` gives the
bytes of the arguments (state + batch), outputs (new state + metrics), temporaries (activations
kept for the backward pass, gradients, workspace) and the output bytes aliased to donated
arguments; the peak estimate is arguments + outputs + temporaries - aliased.

Two XLA:CPU effects to keep in mind: it converts bfloat16 convolutions to float32, so activations
it keeps are float32 where a GPU/TPU keeps bfloat16 (CPU figures are high by up to 2x), and it
drops jax.checkpoint's optimisation barriers, so `model.remat` saves nothing on CPU (the script
says so when it sees no barrier left in a remat step); its generated code is not counted (0).

The mesh is one device (data parallelism: every device holds this footprint for its share of the
global batch), or with --fsdp=N, N fake CPU devices with the parameters and optimiser state split
over an 'fsdp' axis. Figures come from XLA:CPU's buffer assignment for the configs' dtype
(bfloat16 compute) and conv_impl='conv3d', what a GPU/TPU would run; a GPU/TPU compiler assigns
buffers with its own fusion and layout decisions, so read them as an estimate of what an
accelerator allocates, not a measurement of one.
"""
import argparse
import importlib.util
import json
import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 2**30


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--configs', default='cvrl_r3d50_k400,cvrl_r3d152x2_k600',
                 help='comma-separated names of configs/*.py')
  p.add_argument('--batches', default='1,2,4,8,16', help='videos (of 2 clips) per device')
  p.add_argument('--remat', default='off,on', help="'off', 'on' or both")
  p.add_argument('--fsdp', type=int, default=1,
                 help='> 1: a (data=1, fsdp=N) mesh over N fake CPU devices; the batch is then '
                      'N x the per-device batch')
  p.add_argument('--frames', type=int, default=0, help='override data.num_frames (0: config)')
  p.add_argument('--size', type=int, default=0, help='override data.image_size (0: config)')
  p.add_argument('--budgets', default='16,32,80,141', help='device memory sizes in GiB')
  p.add_argument('--json', default=os.path.join(REPO_ROOT, 'bench', 'out', 'memory.json'))
  return p.parse_args(argv)


def load_config(name: str):
  path = os.path.join(REPO_ROOT, 'configs', f'{name}.py')
  if not os.path.isfile(path):
    raise SystemExit(f'No config {path}; --configs takes names of files in configs/.')
  spec = importlib.util.spec_from_file_location(f'cvrl_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def tree_bytes(tree) -> int:
  import jax
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def measure(config, fsdp: int) -> dict:
  """Compiles the train step of `config` on abstract inputs over a (data=1, fsdp) mesh; returns
  its memory."""
  import jax
  from jax.sharding import AxisType
  from cvrl_jax import optim
  from cvrl_jax import sharding
  from cvrl_jax import train_step
  from cvrl_jax.objectives import build_objective

  mesh = jax.make_mesh((1, fsdp), sharding.AXES, axis_types=(AxisType.Auto,) * 2,
                       devices=jax.devices()[:fsdp])
  objective = build_objective(config)
  examples = config.data.num_train_examples
  parts = train_step.build_train_step(config, mesh, objective, optim.total_steps(config, examples),
                                   optim.steps_per_epoch(config, examples))
  start = time.perf_counter()
  compiled = parts.compile()
  seconds = time.perf_counter() - start
  mem = compiled.memory_analysis()
  # jax.checkpoint (model.remat) keeps recomputation apart with optimisation barriers; a backend
  # that drops them merges the recomputed forward pass back into the saved one (CSE).
  barriers = compiled.as_text().count(' opt-barrier(')
  out = {
      'argument': mem.argument_size_in_bytes, 'output': mem.output_size_in_bytes,
      'temp': mem.temp_size_in_bytes, 'alias': mem.alias_size_in_bytes,
      'generated_code': mem.generated_code_size_in_bytes,
      'state_bytes_global': tree_bytes(parts.abstract_state),
      'params_bytes_global': tree_bytes(parts.abstract_state.params),
      'compile_s': seconds, 'opt_barriers': barriers}
  out['peak'] = out['argument'] + out['output'] + out['temp'] - out['alias']
  return out


def fits(points: list[tuple[int, int]], budget: float) -> str:
  """Largest per-device batch whose peak fits `budget` bytes, from a least-squares line through
  the measured (batch, peak) points; '~' marks a batch beyond the measured ones."""
  if len(points) < 2:
    return '?'
  xs, ys = zip(*points)
  n = len(xs)
  mx, my = sum(xs) / n, sum(ys) / n
  slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx)**2 for x in xs)
  intercept = my - slope * mx
  if slope <= 0:
    return '?'
  batch = int((budget - intercept) // slope)
  if batch < 1:
    return '0'
  return str(batch) if batch <= max(xs) else f'~{batch}'


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.fsdp > 1:
    flag = f'--xla_force_host_platform_device_count={args.fsdp}'
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + flag).strip()
  sys.path.insert(0, REPO_ROOT)
  from cvrl_jax import startup
  startup.configure_process()
  import jax

  budgets = [float(b) for b in args.budgets.split(',')]
  batches = [int(b) for b in args.batches.split(',')]
  remats = [{'off': False, 'on': True}[r] for r in args.remat.split(',')]
  results = []
  header = (f'{"config":20} {"remat":>5} {"videos/dev":>10} {"args GiB":>9} {"out GiB":>8} '
            f'{"temp GiB":>9} {"alias GiB":>9} {"code MiB":>8} {"peak GiB":>9} {"compile s":>9}')
  print(f'devices: {args.fsdp} ({"fsdp" if args.fsdp > 1 else "data parallel, per device"}); '
        f'XLA:{jax.default_backend()} buffer assignment (an estimate of GPU/TPU allocation)')
  print(header)
  for name in args.configs.split(','):
    for remat in remats:
      for per_device in batches:
        config = load_config(name)
        with config.unlocked():
          config.model.conv_impl = 'conv3d'
          config.model.remat = remat
          config.batch_size = per_device * args.fsdp
          config.mesh.data, config.mesh.fsdp = 1, args.fsdp
          if args.frames:
            config.data.num_frames = args.frames
          if args.size:
            config.data.image_size = args.size
        m = measure(config, args.fsdp)
        row = dict(config=name, remat=remat, videos_per_device=per_device, devices=args.fsdp,
                   frames=config.data.num_frames, size=config.data.image_size,
                   dtype=config.model.dtype, **m)
        results.append(row)
        print(f'{name:20} {"on" if remat else "off":>5} {per_device:>10} '
              f'{m["argument"] / GIB:>9.2f} {m["output"] / GIB:>8.2f} {m["temp"] / GIB:>9.2f} '
              f'{m["alias"] / GIB:>9.2f} {m["generated_code"] / 2**20:>8.1f} '
              f'{m["peak"] / GIB:>9.2f} {m["compile_s"]:>9.1f}', flush=True)

  print('\nlargest videos per device that fit (linear fit over the measured batches; '
        '~ = extrapolated):')
  print(f'{"config":20} {"remat":>5} ' + ' '.join(f'{f"{b:g} GiB":>8}' for b in budgets))
  for name in args.configs.split(','):
    for remat in remats:
      points = [(r['videos_per_device'], r['peak']) for r in results
                if r['config'] == name and r['remat'] == remat]
      print(f'{name:20} {"on" if remat else "off":>5} ' +
            ' '.join(f'{fits(points, b * GIB):>8}' for b in budgets))
  if any(r['remat'] and not r['opt_barriers'] for r in results):
    print(f'\nremat on: XLA:{jax.default_backend()} removed every optimisation barrier of '
          'jax.checkpoint and merged the recomputation back into the forward pass, so these rows '
          'equal remat off here; GPU and TPU keep the barriers and hold less.')
  os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
  with open(args.json, 'w') as f:
    json.dump({'jax': jax.__version__, 'backend': jax.default_backend(), 'results': results},
              f, indent=2)
  print(f'\nwrote {args.json}')


if __name__ == '__main__':
  main()
