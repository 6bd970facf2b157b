"""On-device augmentation cost of a CVRL batch, alone and as a share of the train step.

  /work/venv/bin/python bench/augment_cost.py                      # R3D-50, 2 videos, 16 x 112^2
  /work/venv/bin/python bench/augment_cost.py --depth 18 --size 224 --batch 1

Four jitted programs on one uint8 batch [B, 2, T, S, S, 3] (CVRL: two clips per video), timed
in turns:
  augment         augment_batch with CVRL's policies (cvrl_view1, cvrl_view2), host-cropped input;
  augment+crop    the same plus the optional on-device random resized crop, from S * 256/224;
  step            the CVRL objective's train step (backbone, projection head, InfoNCE; forward,
                  backward, SGD-momentum update) on already augmented float clips;
  augment+step    the trainer's step: augmentation and step in one jit.
The share of the step is augment / step, and (augment+step - step) / (augment+step) is what
augmenting inside the step adds to it. Times are the best of `--steps` timed calls after warm-up
(on a shared machine other processes only ever slow a call down); medians are printed too. On the
CPU backend the process's CPU time is printed as well: it counts work done rather than time spent
waiting for a core, so it is the steadier measure on a busy machine.
"""
import argparse
import dataclasses
import functools
import json
import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from cvrl_jax import augment  # noqa: E402
from cvrl_jax import config_lib  # noqa: E402
from cvrl_jax import startup  # noqa: E402
from cvrl_jax.objectives import build_objective  # noqa: E402

POLICIES = ('cvrl_view1', 'cvrl_view2')


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--batch', type=int, default=2, help='videos per step (2 clips each)')
  p.add_argument('--frames', type=int, default=16)
  p.add_argument('--size', type=int, default=112, help='clip height and width after the crop')
  p.add_argument('--depth', type=int, default=50, help='R3D depth of the train step')
  p.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'),
                 help='model compute dtype (bfloat16 on TPU/GPU; float32 is faster on CPU)')
  p.add_argument('--steps', type=int, default=5, help='timed calls per program')
  p.add_argument('--warmup', type=int, default=1)
  p.add_argument('--augment-only', action='store_true', help='skip the model programs')
  p.add_argument('--breakdown', action='store_true',
                 help='also time each augmentation op alone (one policy per op, always applied)')
  p.add_argument('--json', default='', help='also write the results to this JSON file')
  return p.parse_args(argv)


def time_interleaved(programs: dict, warmup: int, steps: int) -> dict[str, dict[str, list]]:
  """Wall and process-CPU seconds of each timed call of every program. The programs take turns,
  so a busy neighbour on a shared machine slows them alike; each must block until it is done."""
  for _ in range(warmup):
    for fn in programs.values():
      fn()
  times = {name: {'wall': [], 'cpu': []} for name in programs}
  for _ in range(steps):
    for name, fn in programs.items():
      wall, cpu = time.perf_counter(), time.process_time()
      fn()
      times[name]['cpu'].append(time.process_time() - cpu)
      times[name]['wall'].append(time.perf_counter() - wall)
  return times


def make_batch(args: argparse.Namespace, size: int) -> dict:
  rng = np.random.default_rng(0)
  shape = (args.batch, len(POLICIES), args.frames, size, size, 3)
  return {'video': jnp.asarray(rng.integers(0, 256, shape, dtype=np.uint8)),
          'key': jnp.asarray(rng.integers(0, 2**32, (args.batch, 2), dtype=np.uint32))}


def single_op_policies(size: int) -> dict[str, augment.AugmentPolicy]:
  """One policy per op of the CVRL pipeline, that op always on and every other op off."""
  off = augment.get_policy('none')
  jitter = augment.cvrl_policy(jitter_prob=1.0, flip_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
  return {
      'flip': dataclasses.replace(off, flip_prob=1.0),
      'jitter (tf)': jitter,
      'jitter (torchvision)': dataclasses.replace(jitter, jitter_style='torchvision'),
      'grayscale': dataclasses.replace(off, grayscale_prob=1.0),
      'blur': dataclasses.replace(off, blur_prob=1.0),
      'solarize': dataclasses.replace(off, solarize_prob=1.0),
      'crop': dataclasses.replace(off, crop_size=(size, size)),
  }


def augment_fn(policies):
  base_key = jax.random.key(0)

  def run(batch):
    return augment.augment_batch(augment.example_keys(base_key, batch['key']), batch['video'],
                                 policies)
  return run


def cvrl_step_fns(args: argparse.Namespace, example_clips: jax.Array):
  """(step on float clips, step with augmentation inside, initial state) for the CVRL objective."""
  config = config_lib.base_config()
  config.model.depth = args.depth
  config.model.dtype = args.dtype
  objective = build_objective(config)
  params, batch_stats, aux = objective.init(jax.random.key(1), example_clips)
  tx = optax.sgd(0.1, momentum=0.9)
  state = (params, batch_stats, tx.init(params))
  augment_batch = augment_fn(objective.plan.augment_policies)

  def step(state, clips):
    params, batch_stats, opt_state = state

    def loss_fn(p):
      out = objective.loss(p, batch_stats, aux, {'clips': clips}, jax.random.key(2), jnp.int32(0))
      return out.loss, out.batch_stats

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

  def step_with_augment(state, batch):
    return step(state, augment_batch(batch))

  return jax.jit(step), jax.jit(step_with_augment), state


def summarize(name: str, times: dict[str, list], clips: int) -> dict:
  wall, cpu = min(times['wall']), min(times['cpu'])
  print(f'{name:>20}: wall best {1e3 * wall:9.1f} ms, median {1e3 * np.median(times["wall"]):9.1f} '
        f'ms ({1e3 * wall / clips:.1f} ms/clip); process CPU best {1e3 * cpu:9.1f} ms', flush=True)
  return {'wall_best_s': wall, 'wall_median_s': float(np.median(times['wall'])), 'cpu_best_s': cpu,
          **{f'{k}_s': v for k, v in times.items()}}


def main(argv=None) -> None:
  args = parse_args(argv)
  startup.configure_process()
  clips = args.batch * len(POLICIES)
  print(f'{jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}; '
        f'{args.batch} videos x {len(POLICIES)} clips of {args.frames} x {args.size}^2', flush=True)
  results = {'args': vars(args), 'device': jax.devices()[0].device_kind}

  batch = make_batch(args, args.size)
  aug = jax.jit(augment_fn(POLICIES))
  big = make_batch(args, round(args.size * 256 / 224))
  cropping = [dataclasses.replace(augment.get_policy(p), crop_size=(args.size, args.size))
              for p in POLICIES]
  aug_crop = jax.jit(augment_fn(cropping))
  programs = {'augment': lambda: aug(batch).block_until_ready(),
              'augment+crop': lambda: aug_crop(big).block_until_ready()}
  if not args.augment_only:
    clips_f32 = aug(batch)
    step, step_with_augment, state = cvrl_step_fns(args, clips_f32)
    programs['step'] = lambda: jax.block_until_ready(step(state, clips_f32))
    programs['augment+step'] = lambda: jax.block_until_ready(step_with_augment(state, batch))

  if args.breakdown:
    for name, policy in single_op_policies(args.size).items():
      fn = jax.jit(augment_fn((policy,) * len(POLICIES)))
      video = big if policy.crop_size else batch
      programs[name] = functools.partial(lambda f, v: f(v).block_until_ready(), fn, video)

  for name, times in time_interleaved(programs, args.warmup, args.steps).items():
    results[name] = summarize(name, times, clips)
  if not args.augment_only:
    for clock in ('wall', 'cpu'):
      best = {name: results[name][f'{clock}_best_s'] for name in programs}
      share = best['augment'] / best['step']
      fused = (best['augment+step'] - best['step']) / best['augment+step']
      results[f'{clock}_augment_over_step'], results[f'{clock}_fused_share'] = share, fused
      print(f'{clock:>4}: augment / step {100 * share:.2f}%; in one jit, '
            f'(augment+step - step) / (augment+step) {100 * fused:.2f}%')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  main()
