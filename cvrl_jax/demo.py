"""The README's demo: demo videos -> CVRL pretraining -> linear probe and kNN vs random init.

  python -m cvrl_jax.demo [--workdir demo_workdir] [--seed 0]

Steps, each in WORKDIR:
  1. data/      the moving-MNIST demo videos (cvrl_jax.data.demo), made once and reused;
  2. pretrain/  CVRL pretraining with configs/demo.py (resumes if interrupted; a finished run is
                kept); its encoder is also exported to pretrain/backbone;
  3. eval_*/    linear probe and kNN (configs/demo_eval.py) of the pretrained encoder and of the
                same architecture at random initialisation, the baseline;
  4. demo_results.md / demo_results.json: the table printed at the end.
"""
import argparse
import importlib.util
import json
import os
import time
from typing import Dict, Mapping, Tuple

from cvrl_jax import logs
from cvrl_jax import startup

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO_ROOT, 'configs')
# Demo data size (the data helper's defaults): 2,000 train / 500 test videos of 40 frames.
NUM_TRAIN, NUM_TEST, NUM_FRAMES = 2000, 500, 40
ROWS = (('pretrained', 'CVRL pretrained'), ('random', 'random init'))
# The linear probe's metrics are 'linear/*' for the full recipe and 'linear_cached_features/*'
# for the cached-feature variant that configs/demo_eval.py runs.
LINEAR_PREFIXES = ('linear', 'linear_cached_features')


def table_columns(results: Mapping[str, float]) -> Tuple[Tuple[str, str], ...]:
  """(metric, title) of the table's columns, for the linear probe variant in `results`."""
  prefix = next((p for p in LINEAR_PREFIXES if f'{p}/top1' in results), None)
  if prefix is None:
    raise ValueError(f'no linear-probe top-1 among the results {sorted(results)}')
  suffix = ' (cached features)' if prefix == 'linear_cached_features' else ''
  return ((f'{prefix}/top1', f'linear top-1{suffix}'), (f'{prefix}/top5', f'linear top-5{suffix}'),
          ('knn/top1', 'kNN top-1'))


def load_config(name: str, data_dir: str):
  """configs/NAME.py's get_config(data_dir) (the configs live next to the package, not in it)."""
  path = os.path.join(CONFIGS, f'{name}.py')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} is missing: run the demo from a checkout of cvrl_jax.')
  spec = importlib.util.spec_from_file_location(f'cvrl_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(data_dir)


def banner(text: str) -> None:
  print(f'\n=== {text}', flush=True)


def make_data(data_dir: str) -> None:
  from cvrl_jax.data import demo as demo_data  # pylint: disable=g-import-not-at-top
  if os.path.exists(os.path.join(data_dir, 'labels.txt')):
    print(f'Reusing the demo videos in {data_dir}.', flush=True)
    return
  start = time.time()
  demo_data.make_demo_dataset(data_dir, num_train=NUM_TRAIN, num_test=NUM_TEST,
                              num_frames=NUM_FRAMES, seed=0)
  print(f'Wrote {NUM_TRAIN} train and {NUM_TEST} test videos to {data_dir} '
        f'in {time.time() - start:.0f}s.', flush=True)


def evaluate(data_dir: str, init_checkpoint: str, workdir: str, seed: int) -> Dict[str, float]:
  """linear_eval then knn_eval of one encoder; their results merged."""
  from cvrl_jax.evaluate import knn, linear  # pylint: disable=g-import-not-at-top
  results = {}
  for job, run in (('linear_eval', linear.linear_eval), ('knn_eval', knn.knn_eval)):
    config = load_config('demo_eval', data_dir)
    config.job = job
    config.seed = seed
    config.init_checkpoint = init_checkpoint
    results.update(run(config, os.path.join(workdir, job)))
  return results


def format_table(results: Mapping[str, Mapping[str, float]]) -> str:
  """A Markdown table: one row per encoder, accuracies in percent, and the margin."""
  columns = table_columns(results['pretrained'])
  lines = ['| encoder | ' + ' | '.join(title for _, title in columns) + ' |',
           '|---|' + '---:|' * len(columns)]
  for key, title in ROWS:
    lines.append(f'| {title} | ' + ' | '.join(f'{100 * results[key][metric]:.1f}'
                                              for metric, _ in columns) + ' |')
  margin = [100 * (results['pretrained'][m] - results['random'][m]) for m, _ in columns]
  lines.append('| difference | ' + ' | '.join(f'{d:+.1f}' for d in margin) + ' |')
  return '\n'.join(lines)


def run_demo(workdir: str, seed: int) -> Dict[str, Dict[str, float]]:
  from cvrl_jax import trainer  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(workdir)
  data_dir = os.path.join(workdir, 'data')
  pretrain_dir = os.path.join(workdir, 'pretrain')
  start = time.time()

  banner('1/4 Demo data: moving MNIST digits (label = digit)')
  make_data(data_dir)

  banner('2/4 CVRL pretraining (configs/demo.py)')
  config = load_config('demo', data_dir)
  config.seed = seed
  trainer.pretrain(config, pretrain_dir)

  results = {}
  banner('3/4 Linear probe and kNN of the pretrained encoder (configs/demo_eval.py)')
  results['pretrained'] = evaluate(data_dir, pretrain_dir, os.path.join(workdir, 'eval_pretrained'),
                                   seed)
  banner('4/4 The same evaluation of the encoder at random initialisation')
  results['random'] = evaluate(data_dir, '', os.path.join(workdir, 'eval_random'), seed)

  table = format_table(results)
  minutes = (time.time() - start) / 60
  with open(os.path.join(workdir, 'demo_results.md'), 'w') as f:
    f.write(f'CVRL demo (seed {seed}, {minutes:.1f} min): accuracy on the {NUM_TEST} test videos, '
            f'%\n\n{table}\n')
  with open(os.path.join(workdir, 'demo_results.json'), 'w') as f:
    json.dump({'seed': seed, 'minutes': minutes, **results}, f, indent=2, sort_keys=True)
  banner(f'Done in {minutes:.1f} min. Test accuracy (%) on {NUM_TEST} videos of 10 classes:')
  print(table)
  print(f'\nWritten to {workdir}/demo_results.md and demo_results.json.', flush=True)
  return results


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', default='demo_workdir', help='where everything is written')
  parser.add_argument('--seed', type=int, default=0, help='pretraining and evaluation seed')
  args = parser.parse_args(argv)
  logs.setup_logging()
  startup.configure_process()
  run_demo(args.workdir, args.seed)


if __name__ == '__main__':
  main()
