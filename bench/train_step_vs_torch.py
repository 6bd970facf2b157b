"""Train-step speed of R3D in JAX (each conv formulation) next to the same model in PyTorch.

  /work/venv/bin/python bench/train_step_vs_torch.py --torch-python=/work/torchvenv/bin/python

One step = forward (BN in train mode), softmax cross-entropy of a linear classifier on the pooled
features, backward, SGD-momentum update: what a training step does, at a small shape. The PyTorch
model is written here to match ours layer for layer (same kernels, strides, widths, BN; only the
alignment of SAME padding differs for stride 2, which changes no shape or FLOP). PyTorch runs in
its own interpreter (`--torch-python`, a venv with torch; this file's `--torch-worker` mode), in
the same run, after the JAX measurements, so the two never share the cores.

Model-FLOPs utilisation = XLA cost-analysis FLOPs of one plain-conv3d JAX step / step time /
dense float32 matmul peak measured in this run; the same model FLOPs are used for every column.
Step times are the best of `--steps` timed steps after warm-up (other processes on a shared
machine only ever slow a step down); medians are printed too.
"""
import argparse
import json
import os
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 400
# Blocks per stage (the same table as cvrl_jax.models.resnet3d; the torch side cannot import it).
DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
          152: (3, 8, 36, 3)}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--depths', default='18,50', help='comma-separated R3D depths')
  p.add_argument('--batch', type=int, default=4)
  p.add_argument('--frames', type=int, default=16)
  p.add_argument('--size', type=int, default=112)
  p.add_argument('--steps', type=int, default=5, help='timed steps per configuration')
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--impls', default='conv3d,factorized', help='JAX conv_impl values to time')
  p.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'),
                 help='JAX compute dtype (PyTorch always runs float32)')
  p.add_argument('--torch-python', default='',
                 help='python of a venv with torch (e.g. /work/torchvenv/bin/python); '
                      'empty: this interpreter if it has torch, else skip PyTorch')
  p.add_argument('--torch-formats', default='channels_last,channels_first',
                 help='PyTorch memory formats to time; the faster one is the reference')
  p.add_argument('--no-cpu-xla-flags', action='store_true',
                 help="don't add cvrl_jax.models.conv.CPU_XLA_FLAGS to XLA_FLAGS")
  p.add_argument('--json', default='', help='also write the results to this JSON file')
  p.add_argument('--torch-worker', action='store_true', help=argparse.SUPPRESS)
  return p.parse_args(argv)


def time_steps(step, warmup: int, steps: int) -> list[float]:
  """Seconds of each timed call of `step()` (which must block until its result is ready)."""
  for _ in range(warmup):
    step()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return times


# ----------------------------------------------------------------------------------------------
# PyTorch side (runs in the torch interpreter; imports nothing from JAX or cvrl_jax).
# ----------------------------------------------------------------------------------------------
def torch_r3d(depth: int, num_classes: int):
  """R3D-18/50 as cvrl_jax.models.ResNet3D builds it (stem kernel (5,7,7), stride (2,2,2))."""
  import torch
  from torch import nn

  def conv(cin, cout, kernel, stride=(1, 1, 1)):
    return nn.Conv3d(cin, cout, kernel, stride, padding=tuple(k // 2 for k in kernel), bias=False)

  def bn(c):
    return nn.BatchNorm3d(c, eps=1e-5, momentum=0.1)  # PyTorch's 0.1 is Keras/Flax's 0.9

  class Shortcut(nn.Sequential):
    def __init__(self, cin, cout, stride):
      super().__init__(conv(cin, cout, (1, 1, 1), (1, stride, stride)), bn(cout))

  class Bottleneck(nn.Module):
    def __init__(self, cin, filters, kt, stride):
      super().__init__()
      cout = 4 * filters
      self.body = nn.Sequential(
          conv(cin, filters, (kt, 1, 1)), bn(filters), nn.ReLU(inplace=True),
          conv(filters, filters, (1, 3, 3), (1, stride, stride)), bn(filters), nn.ReLU(inplace=True),
          conv(filters, cout, (1, 1, 1)), bn(cout))
      self.shortcut = Shortcut(cin, cout, stride) if cin != cout or stride != 1 else nn.Identity()

    def forward(self, x):
      return torch.relu(self.body(x) + self.shortcut(x))

  class Basic(nn.Module):
    def __init__(self, cin, filters, stride):
      super().__init__()
      self.body = nn.Sequential(
          conv(cin, filters, (3, 3, 3), (1, stride, stride)), bn(filters), nn.ReLU(inplace=True),
          conv(filters, filters, (3, 3, 3)), bn(filters))
      self.shortcut = (Shortcut(cin, filters, stride) if cin != filters or stride != 1
                       else nn.Identity())

    def forward(self, x):
      return torch.relu(self.body(x) + self.shortcut(x))

  counts = DEPTHS[depth]
  layers = [conv(3, 64, (5, 7, 7), (2, 2, 2)), bn(64), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))]
  cin = 64
  for i, n in enumerate(counts):
    filters = 64 * 2**i
    for j in range(n):
      stride = 2 if i > 0 and j == 0 else 1
      if depth >= 50:
        layers.append(Bottleneck(cin, filters, (1, 1, 3, 3)[i], stride))
        cin = 4 * filters
      else:
        layers.append(Basic(cin, filters, stride))
        cin = filters
  layers += [nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
  return nn.Sequential(*layers)


def run_torch_worker(args: argparse.Namespace) -> None:
  """Prints one JSON line per (depth, memory format) with the step times."""
  import torch
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  for depth in [int(d) for d in args.depths.split(',')]:
    for fmt in args.torch_formats.split(','):
      memory_format = {'channels_last': torch.channels_last_3d,
                       'channels_first': torch.contiguous_format}[fmt]
      model = torch_r3d(depth, NUM_CLASSES).to(memory_format=memory_format).train()
      opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
      x = torch.rand(args.batch, 3, args.frames, args.size, args.size)
      x = x.contiguous(memory_format=memory_format)
      y = torch.randint(0, NUM_CLASSES, (args.batch,))

      def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

      times = time_steps(step, args.warmup, args.steps)
      print(json.dumps({'depth': depth, 'format': fmt, 'times': times,
                        'torch': torch.__version__, 'threads': torch.get_num_threads()}),
            flush=True)


def run_torch(args: argparse.Namespace) -> dict[int, dict]:
  """Runs the worker in the torch interpreter; {depth: fastest format's record} ({} if no torch)."""
  python = args.torch_python or sys.executable
  probe = subprocess.run([python, '-c', 'import torch'], capture_output=True)
  if probe.returncode != 0:
    print(f'PyTorch not importable by {python}; skipping the PyTorch column '
          '(pass --torch-python=/path/to/venv/bin/python).', file=sys.stderr)
    return {}
  cmd = [python, os.path.abspath(__file__), '--torch-worker'] + [
      f'--{k.replace("_", "-")}={v}' for k, v in vars(args).items()
      if k in ('depths', 'batch', 'frames', 'size', 'steps', 'warmup', 'torch_formats')]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    print(f'PyTorch worker failed; skipping the PyTorch column:\n{proc.stderr[-2000:]}',
          file=sys.stderr)
    return {}
  best = {}
  for line in proc.stdout.splitlines():
    rec = json.loads(line)
    if rec['depth'] not in best or min(rec['times']) < min(best[rec['depth']]['times']):
      best[rec['depth']] = rec
  return best


# ----------------------------------------------------------------------------------------------
# JAX side.
# ----------------------------------------------------------------------------------------------
def matmul_peak_flops(n: int = 4096, repeats: int = 5) -> float:
  """Best float32 FLOP/s of an n x n matmul: the dense peak MFU is measured against."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(jnp.matmul)
  times = time_steps(lambda: f(a, b).block_until_ready(), 1, repeats)
  return 2 * n**3 / min(times)


def jax_train_step(depth: int, impl: str, dtype: str, x, y):
  """(jitted step, initial state, compiled-step FLOPs) for backbone + linear classifier, SGD."""
  import flax.linen as nn
  import jax
  import optax
  from cvrl_jax import config_lib
  from cvrl_jax import models

  cfg = config_lib.model_config()
  cfg.depth, cfg.conv_impl, cfg.dtype = depth, impl, dtype
  backbone = models.build_backbone(cfg)

  class Classifier(nn.Module):
    backbone: nn.Module

    @nn.compact
    def __call__(self, clips, train: bool):
      return models.LinearClassifier(NUM_CLASSES, name='head')(self.backbone(clips, train), train)

  model = Classifier(backbone)
  variables = jax.jit(lambda: model.init(jax.random.key(0), x, train=False))()
  tx = optax.sgd(0.01, momentum=0.9)
  state = (variables['params'], variables['batch_stats'], tx.init(variables['params']))

  def step(state, x, y):
    params, batch_stats, opt_state = state

    def loss_fn(params):
      logits, new_vars = model.apply({'params': params, 'batch_stats': batch_stats}, x,
                                     train=True, mutable=['batch_stats'])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, new_vars['batch_stats']

    grads, batch_stats = jax.grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state

  compiled = jax.jit(step, donate_argnums=0).lower(state, x, y).compile()
  return compiled, state, compiled.cost_analysis()['flops']


def run_jax(args: argparse.Namespace, depth: int) -> dict[str, dict]:
  import jax
  x = jax.random.uniform(jax.random.key(1), (args.batch, args.frames, args.size, args.size, 3))
  y = jax.random.randint(jax.random.key(2), (args.batch,), 0, NUM_CLASSES)
  results = {}
  for impl in args.impls.split(','):
    step, state, flops = jax_train_step(depth, impl, args.dtype, x, y)
    holder = [state]

    def run():
      holder[0] = step(holder[0], x, y)
      jax.block_until_ready(holder[0])

    results[impl] = {'times': time_steps(run, args.warmup, args.steps), 'flops': flops}
    del holder, step
  return results


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.torch_worker:
    run_torch_worker(args)
    return
  if args.no_cpu_xla_flags:
    os.environ['CVRL_JAX_NO_XLA_FLAGS'] = '1'
  sys.path.insert(0, REPO_ROOT)
  from cvrl_jax import startup
  startup.configure_process()
  import jax
  import numpy as np

  depths = [int(d) for d in args.depths.split(',')]
  if not set(depths) <= set(DEPTHS):
    sys.exit(f'--depths must be among {sorted(DEPTHS)}, got {args.depths!r}.')
  peak = matmul_peak_flops()
  jax_results = {d: run_jax(args, d) for d in depths}
  peak = max(peak, matmul_peak_flops())  # measured again after the JAX runs, best of both
  torch_results = run_torch(args)

  print(f'\nbackend {jax.default_backend()}, {os.cpu_count()} cores, jax {jax.__version__}; '
        f'batch {args.batch} x {args.frames} x {args.size}^2, JAX dtype {args.dtype}; '
        f'float32 matmul peak {peak / 1e9:.0f} GFLOP/s; load average {os.getloadavg()[0]:.2f}; '
        f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}')
  header = (f'{"model":8} {"impl":30} {"ms/step":>8} {"median":>8} {"clips/s":>8} '
            f'{"MFU":>6} {"vs torch":>9}')
  print(header + '\n' + '-' * len(header))
  rows = []
  for depth in depths:
    model_flops = jax_results[depth].get('conv3d', next(iter(jax_results[depth].values())))['flops']
    entries = [(f'jax {impl}', r['times']) for impl, r in jax_results[depth].items()]
    torch_rec = torch_results.get(depth)
    if torch_rec:
      entries.append((f'torch {torch_rec["torch"].split("+")[0]} {torch_rec["format"]}',
                      torch_rec['times']))
    torch_best = min(torch_rec['times']) if torch_rec else None
    for name, times in entries:
      best, median = min(times), float(np.median(times))
      ratio = f'{torch_best / best:9.2f}' if torch_best else f'{"-":>9}'
      print(f'R3D-{depth:<4} {name:30} {best * 1e3:8.0f} {median * 1e3:8.0f} '
            f'{args.batch / best:8.2f} {model_flops / best / peak:6.1%} {ratio}')
      rows.append({'depth': depth, 'impl': name, 'best_s': best, 'median_s': median,
                   'model_flops': model_flops, 'mfu': model_flops / best / peak})
  print('MFU: XLA cost-analysis FLOPs of the conv3d step (of the first impl if conv3d is not '
        'timed) / best step time / matmul peak.\nvs torch: PyTorch best step time / this best step '
        'time (> 1: faster than PyTorch).')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'args': vars(args), 'peak_flops': peak, 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  main()
