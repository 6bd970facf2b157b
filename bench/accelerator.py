"""The CVRL pretraining step on one accelerator: step time, clips/s, MFU and peak memory.

  bash bench/accelerator.sh                  # on a GPU or TPU machine: installs, runs, one table
  python bench/accelerator.py --small        # the same end to end on CPU at tiny shapes (smoke)

Rows (in this order, so the most important ones run first under the time budget):
  R3D-50, 16 x 224^2, bfloat16: every model.conv_impl with remat off, then with remat on;
  R3D-18 bfloat16: every conv_impl, remat off;
  R3D-50 float32 (reference): every conv_impl, remat off.
Each row is the whole pretraining step `cvrl_jax.train_step.build_train_step` compiles (on-device
augmentation, both views through the network, InfoNCE over the batch, backward, SGD update) for
the CVRL config `configs/cvrl_r3d50_k400.py` on one device.

Batch: the largest per-device batch that fits. The step is compiled and run at a probe batch;
XLA's compiled memory of it (arguments + outputs + temporaries - donated aliases), less twice the
train state (the state itself and gradient-sized temporaries, which do not grow with the batch),
gives the bytes per video; the largest batch under the device's memory limit x --headroom,
rounded down to a multiple of 4, is compiled and run; if it still runs out of memory the row
backs off by a quarter, at most twice. Two compilations per row (one where the probe is already
the largest batch); the XLA compilation cache (--cache-dir) makes a second run start faster.
Step time: the best of --steps timed steps after --warmup steps (other load only slows a step).
clips/s = 2 clips x batch / step time. MFU = model FLOPs of the step / step time / the device's
dense matmul peak measured here (bfloat16, or float32 for float32 rows; the best of several square
matmuls). Model FLOPs = 3 (forward + backward) x 2 clips x batch x the backbone's dense conv FLOPs
per clip (bench/model_flops.py's count, the same for every conv_impl since they compute the same
convolution): XLA's cost analysis is no yardstick on GPU, where it leaves out the cuDNN
convolution calls (it reported 1.0 TFLOP for a conv3d step whose convolutions alone are 70), so it
is kept in the JSON only. Peak memory: the runtime's `peak_bytes_in_use` after the timed steps
(per row: every row runs in a fresh process), beside XLA's estimate for that batch.

Then the host input pipeline's clips/s on this machine (bench/input_pipeline.py, ours, all cores).
Results also go to --json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 2**30
CONV_IMPLS = ('conv3d', 'factorized')


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--small', action='store_true',
                 help='tiny shapes (4 x 32^2 clips, width 1/8) and a 0.25 GiB memory budget: '
                      'the whole script end to end on CPU in a few minutes')
  p.add_argument('--budget-s', type=float, default=400.0,
                 help='seconds for all rows together; rows that would start later are skipped')
  p.add_argument('--row-timeout-s', type=float, default=240.0, help='limit for one row')
  p.add_argument('--steps', type=int, default=5, help='timed steps per row')
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--headroom', type=float, default=0.85,
                 help='fraction of the device memory limit a batch may plan to use')
  p.add_argument('--memory-gib', type=float, default=0.0,
                 help='device memory to plan for (0: the runtime\'s bytes_limit)')
  p.add_argument('--max-batch', type=int, default=512, help='per-device batch never above this')
  p.add_argument('--probe-batch', type=int, default=8, help='batch of the first compilation')
  p.add_argument('--cache-dir', default=os.path.join(REPO_ROOT, 'bench', 'out', 'xla_cache'),
                 help="JAX's persistent compilation cache ('' : off)")
  p.add_argument('--pipeline-batches', type=int, default=6,
                 help='timed batches of the host pipeline measurement (0: skip it)')
  p.add_argument('--json', default=os.path.join(REPO_ROOT, 'bench', 'out', 'accelerator.json'))
  p.add_argument('--table-from', default='',
                 help='print the table of an earlier run\'s --json file and exit (nothing runs)')
  p.add_argument('--row', default='', help=argparse.SUPPRESS)  # worker mode: one row, JSON out
  return p.parse_args(argv)


def rows(small: bool) -> list[dict]:
  """The table's rows, most important first."""
  out = []
  for remat in (False, True):  # remat off first: conv3d vs factorized picks the 'auto' default
    for impl in CONV_IMPLS:
      out.append(dict(depth=50, dtype='bfloat16', conv_impl=impl, remat=remat))
  for impl in CONV_IMPLS:
    out.append(dict(depth=18, dtype='bfloat16', conv_impl=impl, remat=False))
  for impl in CONV_IMPLS:
    out.append(dict(depth=50, dtype='float32', conv_impl=impl, remat=False))
  shape = dict(frames=4, size=32, width=0.125) if small else dict(frames=16, size=224, width=1.0)
  return [dict(r, **shape) for r in out]


# ----------------------------------------------------------------------------------------------
# Worker: one row in its own process.
# ----------------------------------------------------------------------------------------------
def _config(row: dict, batch: int):
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      'cvrl_r3d50_k400', os.path.join(REPO_ROOT, 'configs', 'cvrl_r3d50_k400.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  with config.unlocked():
    config.batch_size = batch
    config.model.depth = row['depth']
    config.model.width_multiplier = row['width']
    config.model.dtype = row['dtype']
    config.model.conv_impl = row['conv_impl']
    config.model.remat = row['remat']
    config.data.num_frames = row['frames']
    config.data.image_size = row['size']
    config.mesh.data, config.mesh.fsdp = 1, 1
  return config


def _parts(row: dict, batch: int):
  import jax
  from jax.sharding import AxisType
  from cvrl_jax import optim
  from cvrl_jax import sharding
  from cvrl_jax import train_step
  from cvrl_jax.objectives import build_objective
  config = _config(row, batch)
  mesh = jax.make_mesh((1, 1), sharding.AXES, axis_types=(AxisType.Auto,) * 2,
                       devices=jax.devices()[:1])
  examples = config.data.num_train_examples
  return train_step.build_train_step(config, mesh, build_objective(config),
                                  optim.total_steps(config, examples),
                                  optim.steps_per_epoch(config, examples))


def _xla_peak(compiled) -> int:
  m = compiled.memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes)


def _is_oom(error: Exception) -> bool:
  text = str(error)
  return 'RESOURCE_EXHAUSTED' in text or 'out of memory' in text.lower() or 'OOM' in text


def _random_batch(parts):
  """A batch laid out like parts.batch_spec: random uint8 frames, distinct integer keys."""
  import jax
  import numpy as np
  rng = np.random.default_rng(0)
  batch = {}
  for name, spec in parts.batch_spec.items():
    if np.dtype(spec.dtype) == np.uint8:
      value = rng.integers(0, 256, spec.shape, dtype=np.uint8)
    else:
      value = (np.arange(int(np.prod(spec.shape))) % (2**31 - 1)).reshape(spec.shape)
      value = value.astype(spec.dtype)
    batch[name] = jax.device_put(value, spec.sharding)
  return batch


def matmul_peak(dtype: str, small: bool) -> float:
  """Best FLOP/s of square matmuls in `dtype` on the default device."""
  import jax
  import jax.numpy as jnp
  n = 1024 if small else 8192
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.dtype(dtype))
  f = jax.jit(jnp.matmul)
  f(a, b).block_until_ready()
  best = float('inf')
  for _ in range(10):
    start = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best


def model_flops_per_step(row: dict, batch: int) -> float:
  """3 x 2 clips x batch x the backbone's dense conv FLOPs per clip (the heads add < 0.1%)."""
  import jax
  import jax.numpy as jnp
  from cvrl_jax import models
  from model_flops import conv_flops  # bench/model_flops.py, beside this script
  config = _config(row, 1)
  config.model.dtype = 'float32'
  backbone = models.build_backbone(config.model)
  x_shape = (1, row['frames'], row['size'], row['size'], 3)
  variables = jax.eval_shape(lambda: backbone.init(jax.random.key(0), jnp.zeros(x_shape),
                                                   train=False))
  return 3.0 * 2 * batch * conv_flops(backbone, variables, x_shape)


def _tree_bytes(tree) -> int:
  import jax
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def time_step(row: dict, batch: int, args: argparse.Namespace) -> dict:
  """Compiles and runs the step at `batch`; its timing, FLOPs and memory."""
  import jax
  device = jax.devices()[0]
  parts = _parts(row, batch)
  state = parts.create_state()
  start = time.perf_counter()
  compiled = parts.compile(state)
  compile_s = time.perf_counter() - start
  data = _random_batch(parts)
  times = []
  for i in range(args.warmup + args.steps):
    start = time.perf_counter()
    state, metrics = compiled(state, data)
    jax.block_until_ready(metrics['loss'])
    if i >= args.warmup:
      times.append(time.perf_counter() - start)
  stats = device.memory_stats() or {}
  return dict(batch=batch, compile_s=compile_s, step_s=min(times),
              step_median_s=sorted(times)[len(times) // 2],
              flops=compiled.cost_analysis()['flops'], xla_peak_bytes=_xla_peak(compiled),
              state_bytes=_tree_bytes(parts.abstract_state),
              runtime_peak_gib=(stats['peak_bytes_in_use'] / GIB
                                if 'peak_bytes_in_use' in stats else None),
              loss=float(metrics['loss']))


def run_row(row: dict, args: argparse.Namespace) -> dict:
  """Probe batch -> planned largest batch from XLA's memory -> run it (backing off on OOM)."""
  import jax
  device = jax.devices()[0]
  limit = (args.memory_gib * GIB if args.memory_gib
           else (device.memory_stats() or {}).get('bytes_limit'))
  if not limit:
    raise SystemExit('The runtime reports no memory limit here: pass --memory-gib.')
  probe = time_step(row, args.probe_batch, args)
  fixed = 2 * probe['state_bytes']
  per_video = max((probe['xla_peak_bytes'] - fixed) / args.probe_batch, 1.0)
  planned = int((limit * args.headroom - fixed) // per_video)
  batch = max(1, min(args.max_batch, planned // 4 * 4 if planned >= 4 else planned))
  out = dict(row, device=device.device_kind, platform=device.platform,
             memory_limit_gib=limit / GIB, planned_batch=planned, probe=probe)
  if batch <= args.probe_batch * 5 // 4:  # the probe is (about) the largest batch already
    return dict(out, **probe, attempts=0)
  for attempt in range(1, 4):
    try:
      return dict(out, **time_step(row, batch, args), attempts=attempt)
    except Exception as e:  # pylint: disable=broad-except
      if not _is_oom(e) or batch <= args.probe_batch:
        raise
      batch = max(args.probe_batch, batch * 3 // 4)
      jax.clear_caches()
  return dict(out, **probe, attempts=-1, note=f'out of memory above batch {batch}')


def worker(args: argparse.Namespace) -> None:
  row = json.loads(args.row)
  result = run_row(row, args)
  result['matmul_peak_flops'] = matmul_peak(row['dtype'], args.small)
  result['model_flops'] = model_flops_per_step(row, result['batch'])
  print('ROW ' + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------
# Driver: every row in a fresh process under one time budget, then the host pipeline.
# ----------------------------------------------------------------------------------------------
def _worker_command(row: dict, args: argparse.Namespace) -> list[str]:
  cmd = [sys.executable, os.path.abspath(__file__), '--row', json.dumps(row),
         f'--steps={args.steps}', f'--warmup={args.warmup}', f'--headroom={args.headroom}',
         f'--memory-gib={args.memory_gib}', f'--max-batch={args.max_batch}',
         f'--probe-batch={args.probe_batch}', f'--cache-dir={args.cache_dir}']
  return cmd + (['--small'] if args.small else [])


def run_rows(args: argparse.Namespace) -> list[dict]:
  deadline = time.monotonic() + args.budget_s
  results = []
  for row in rows(args.small):
    left = deadline - time.monotonic()
    if left < 20:
      results.append(dict(row, skipped='time budget'))
      continue
    label = _label(row)
    print(f'running {label} ...', flush=True)
    try:
      proc = subprocess.run(_worker_command(row, args), capture_output=True, text=True,
                            timeout=min(args.row_timeout_s, left), cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
      results.append(dict(row, skipped='row time limit'))
      continue
    line = next((l for l in proc.stdout.splitlines() if l.startswith('ROW ')), None)
    if proc.returncode != 0 or line is None:
      reason = (proc.stderr.strip().splitlines() or ['no output'])[-1][:160]
      results.append(dict(row, error=reason))
      continue
    results.append(json.loads(line[4:]))
  return results


def host_pipeline(args: argparse.Namespace) -> dict | None:
  """Ours-only host pipeline clips/s with every core (bench/input_pipeline.py)."""
  if args.pipeline_batches <= 0:
    return None
  cores = os.cpu_count() or 1
  cmd = [sys.executable, os.path.join(REPO_ROOT, 'bench', 'input_pipeline.py'),
         f'--threads={cores}', f'--batches={args.pipeline_batches}', '--batch=8',
         '--ours-only', '--json=-']
  if args.small:
    cmd += ['--videos=4', '--frames=64']
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
  line = next((l for l in proc.stdout.splitlines() if l.startswith('JSON ')), None)
  if proc.returncode != 0 or line is None:
    return {'error': (proc.stderr.strip().splitlines() or ['no output'])[-1][:160]}
  return dict(json.loads(line[5:]), cores=cores)


def _label(row: dict) -> str:
  width = '' if row['width'] == 1 else f' x{row["width"]:g}'
  return (f'R3D-{row["depth"]}{width} {row["dtype"]} {row["conv_impl"]} '
          f'remat {"on" if row["remat"] else "off"}')


def print_table(results: list[dict], pipeline: dict | None) -> None:
  device = next((r['device'] for r in results if 'device' in r), '?')
  first = next((r for r in results if 'frames' in r), {})
  print(f'\nCVRL pretraining step on one {device}, clips {first.get("frames")} x '
        f'{first.get("size")}^2, 2 clips per video')
  header = (f'{"row":44} {"batch":>5} {"ms/step":>8} {"clips/s":>8} {"MFU":>6} '
            f'{"peak GiB":>8} {"XLA GiB":>8} {"compile s":>9}')
  print(header + '\n' + '-' * len(header))
  for r in results:
    label = _label(r)
    if 'step_s' not in r:
      print(f'{label:44} {r.get("skipped") or r.get("error")}')
      continue
    mfu = model_flops_per_step(r, r['batch']) / r['step_s'] / r['matmul_peak_flops']
    runtime = (f'{r["runtime_peak_gib"]:8.2f}' if r['runtime_peak_gib'] is not None
               else f'{"n/a":>8}')
    print(f'{label:44} {r["batch"]:5d} {r["step_s"] * 1e3:8.1f} '
          f'{2 * r["batch"] / r["step_s"]:8.1f} {mfu:6.1%} {runtime} '
          f'{r["xla_peak_bytes"] / GIB:8.2f} {r["compile_s"]:9.1f}')
  peaks = {r['dtype']: r['matmul_peak_flops'] for r in results if 'matmul_peak_flops' in r}
  print('MFU: model FLOPs of the step (3 x 2 clips x batch x dense conv FLOPs per clip) / best '
        'step time / measured matmul peak ('
        + ', '.join(f'{k} {_flops(v)}' for k, v in peaks.items()) + '). peak GiB: '
        "the runtime's peak_bytes_in_use (n/a where the runtime has no memory statistics).")
  if pipeline is not None:
    if 'error' in pipeline:
      print(f'\nhost input pipeline: {pipeline["error"]}')
    else:
      print(f'\nhost input pipeline (ours, {pipeline["cores"]} cores): '
            f'{pipeline["wall_clips_per_s"]:.1f} clips/s wall, '
            f'{pipeline["clips_per_cpu_s"]:.1f} clips per CPU-second')
      steps = [2 * r['batch'] / r['step_s'] for r in results if 'step_s' in r]
      if steps:
        print(f'  the fastest row trains at {max(steps):.1f} clips/s: '
              f'{max(steps) / pipeline["clips_per_cpu_s"]:.1f} host cores per accelerator')


def _flops(value: float) -> str:
  return f'{value / 1e12:.1f} TFLOP/s' if value >= 1e12 else f'{value / 1e9:.0f} GFLOP/s'


def main(argv=None) -> None:
  args = parse_args(argv)
  sys.path.insert(0, REPO_ROOT)
  from cvrl_jax import startup
  startup.configure_process()
  if args.table_from:
    with open(args.table_from) as f:
      saved = json.load(f)
    print_table(saved['rows'], saved.get('host_pipeline'))
    return
  if args.row:
    if args.cache_dir:
      import jax  # pylint: disable=g-import-not-at-top
      jax.config.update('jax_compilation_cache_dir', args.cache_dir)
      jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
    worker(args)
    return
  if args.small:  # tiny shapes, a small memory budget and few steps: minutes on a CPU
    args.memory_gib = args.memory_gib or 0.08
    args.probe_batch, args.steps, args.warmup = min(args.probe_batch, 4), min(args.steps, 2), 1
  start = time.monotonic()
  results = run_rows(args)
  pipeline = host_pipeline(args)
  print_table(results, pipeline)
  print(f'\ntotal {time.monotonic() - start:.0f} s')
  os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
  with open(args.json, 'w') as f:
    json.dump({'rows': results, 'host_pipeline': pipeline, 'small': args.small}, f, indent=1)
  print(f'wrote {args.json}')


if __name__ == '__main__':
  main()
