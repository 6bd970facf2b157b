"""The README's demo: demo videos -> CVRL pretraining -> linear probe and kNN vs random init.

  python -m cvrl_jax.demo [--workdir demo_workdir] [--seed 0] [--variant nuisance]

Steps, each in WORKDIR:
  1. data/      the moving-MNIST demo videos (cvrl_jax.data.demo), made once and reused
                (--variant nuisance: with the nuisances of real video, backgrounds, lighting
                drift, clutter and zoom, in data_nuisance/; on those CVRL does not yet beat a
                random encoder at the demo's budget, BENCHMARKS.md "Demo");
  2. pretrain/  CVRL pretraining with configs/demo.py (resumes if interrupted; a finished run is
                kept), with TensorBoard scalars (loss, contrastive accuracy, the online kNN
                monitor); its encoder is also exported to pretrain/backbone;
  3. eval_*/    linear probe at 100%, 10% and 1% of the training labels and kNN
                (configs/demo_eval.py) of the pretrained encoder and of the same architecture at
                random initialisation, the baseline;
  4. demo_results.md / demo_results.json: the tables printed at the end, and demo_report.png:
                training curves, accuracy by label fraction, and a retrieval grid (cvrl_jax.report).
"""
import argparse
import json
import os
import time
from typing import Dict, Mapping, Tuple

from cvrl_jax import config_lib
from cvrl_jax import events
from cvrl_jax import logs
from cvrl_jax import startup

# Demo data size (the data helper's defaults): 2,000 train / 500 test videos of 40 frames.
NUM_TRAIN, NUM_TEST, NUM_FRAMES = 2000, 500, 40
ROWS = (('pretrained', 'CVRL pretrained'), ('random', 'random init'))
# The linear probe's label fractions (config.eval.label_fraction): CVRL's semi-supervised
# evaluation at demo scale. The first is the main table's.
LABEL_FRACTIONS = (1.0, 0.1, 0.01)
REPORT_QUERIES, REPORT_NEIGHBOURS = 5, 4
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
  """configs/NAME.py's get_config(data_dir)."""
  return config_lib.load_config_file(name, data_dir)


def banner(text: str) -> None:
  print(f'\n=== {text}', flush=True)


def make_data(data_dir: str, variant: str) -> None:
  from cvrl_jax.data import demo as demo_data  # pylint: disable=g-import-not-at-top
  if os.path.exists(os.path.join(data_dir, 'labels.txt')):
    print(f'Reusing the demo videos in {data_dir}.', flush=True)
    return
  start = time.time()
  demo_data.make_demo_dataset(data_dir, num_train=NUM_TRAIN, num_test=NUM_TEST,
                              num_frames=NUM_FRAMES, seed=0, variant=variant)
  print(f'Wrote {NUM_TRAIN} train and {NUM_TEST} test {variant} videos to {data_dir} '
        f'in {time.time() - start:.0f}s.', flush=True)


def eval_config(data_dir: str, job: str, init_checkpoint: str, seed: int, fraction: float = 1.0):
  config = load_config('demo_eval', data_dir)
  config.job = job
  config.seed = seed
  config.init_checkpoint = init_checkpoint
  config.eval.label_fraction = fraction
  return config


def fraction_dir(fraction: float) -> str:
  """linear_eval (all labels), linear_eval_10pct, linear_eval_1pct."""
  return 'linear_eval' if fraction == 1.0 else f'linear_eval_{100 * fraction:g}pct'


def evaluate(data_dir: str, init_checkpoint: str, workdir: str, seed: int) -> Dict[str, float]:
  """linear_eval at every label fraction, then knn_eval, of one encoder; their results merged
  (the probe's at fraction f < 1 renamed 'label_fraction_{f}/top1' etc.)."""
  from cvrl_jax.evaluate import knn, linear  # pylint: disable=g-import-not-at-top
  results = {}
  for fraction in LABEL_FRACTIONS:
    config = eval_config(data_dir, 'linear_eval', init_checkpoint, seed, fraction)
    out = linear.linear_eval(config, os.path.join(workdir, fraction_dir(fraction)))
    if fraction == 1.0:
      results.update(out)
    else:
      results.update({f'label_fraction_{fraction:g}/{k.split("/", 1)[1]}': v
                      for k, v in out.items()})
  config = eval_config(data_dir, 'knn_eval', init_checkpoint, seed)
  results.update(knn.knn_eval(config, os.path.join(workdir, 'knn_eval')))
  return results


def fraction_top1(results: Mapping[str, float]) -> Dict[float, float]:
  """{label fraction: linear test top-1} of one encoder's merged results."""
  top1 = {1.0: results[table_columns(results)[0][0]]}
  for fraction in LABEL_FRACTIONS:
    if f'label_fraction_{fraction:g}/top1' in results:
      top1[fraction] = results[f'label_fraction_{fraction:g}/top1']
  return top1


def format_fraction_table(results: Mapping[str, Mapping[str, float]]) -> str:
  """A Markdown table of linear top-1 (%) by label fraction: both encoders and the margin."""
  by_fraction = {key: fraction_top1(results[key]) for key, _ in ROWS}
  fractions = sorted(by_fraction['pretrained'], reverse=True)
  lines = ['| labels | ' + ' | '.join(title for _, title in ROWS) + ' | difference |',
           '|---:|' + '---:|' * (len(ROWS) + 1)]
  for fraction in fractions:
    values = [100 * by_fraction[key][fraction] for key, _ in ROWS]
    lines.append(f'| {100 * fraction:g}% | ' + ' | '.join(f'{v:.1f}' for v in values) +
                 f' | {values[0] - values[1]:+.1f} |')
  return '\n'.join(lines)


def write_report(path: str, data_dir: str, pretrain_dir: str, seed: int,
                 results: Mapping[str, Mapping[str, float]]) -> str:
  """demo_report.png (cvrl_jax.report): curves, accuracy by label fraction, retrieval grid."""
  from cvrl_jax import report  # pylint: disable=g-import-not-at-top
  from cvrl_jax.evaluate import common  # pylint: disable=g-import-not-at-top
  from cvrl_jax import sharding  # pylint: disable=g-import-not-at-top
  config = eval_config(data_dir, 'knn_eval', '', seed)
  mesh = sharding.make_mesh(config.mesh)
  train, test = {}, {'features': {}}
  for key, checkpoint in (('pretrained', pretrain_dir), ('random', '')):
    config.init_checkpoint = checkpoint
    backbone, variables, _ = common.load_encoder(config, mesh)
    train[key] = report.centre_clip_frames_and_features(config, mesh, backbone, variables, 'train')
    queries = report.centre_clip_frames_and_features(config, mesh, backbone, variables, 'eval')
    test.update(frame=queries['frame'], label=queries['label'])
    test['features'][key] = queries['features']
  chosen = report.pick_queries(test['label'], REPORT_QUERIES, seed)
  grid = report.retrieval_grid(train, test, chosen, REPORT_NEIGHBOURS)
  titles = dict(ROWS)
  return report.write_report(
      path, scalars=events.read_scalars(pretrain_dir),
      fractions={key: fraction_top1(results[key]) for key, _ in ROWS}, retrieval=grid,
      encoder_titles=titles,
      title=f'CVRL demo, seed {seed}: pretrained vs random initialisation (same architecture)')


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


def run_demo(workdir: str, seed: int, variant: str = 'clean') -> Dict[str, Dict[str, float]]:
  import jax  # pylint: disable=g-import-not-at-top
  from cvrl_jax import trainer  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(workdir)
  suffix = '' if variant == 'clean' else f'_{variant}'  # the variants never share a folder
  data_dir = os.path.join(workdir, f'data{suffix}')
  pretrain_dir = os.path.join(workdir, f'pretrain{suffix}')
  start = time.time()

  banner(f'1/5 Demo data: moving MNIST digits (label = digit), {variant} variant')
  make_data(data_dir, variant)

  banner('2/5 CVRL pretraining (configs/demo.py)')
  config = load_config('demo', data_dir)
  config.seed = seed
  trainer.pretrain(config, pretrain_dir)

  results = {}
  banner('3/5 Linear probe (100% / 10% / 1% of the labels) and kNN of the pretrained encoder '
         '(configs/demo_eval.py)')
  results['pretrained'] = evaluate(data_dir, pretrain_dir,
                                   os.path.join(workdir, f'eval_pretrained{suffix}'), seed)
  banner('4/5 The same evaluation of the encoder at random initialisation')
  results['random'] = evaluate(data_dir, '', os.path.join(workdir, f'eval_random{suffix}'), seed)

  table, fractions = format_table(results), format_fraction_table(results)
  minutes = (time.time() - start) / 60
  # The same seed gives the same table on the same machine only with the same devices: the batch
  # is sharded over them, and the sums' float order follows (BENCHMARKS.md, "Demo").
  devices = f'{jax.device_count()} {jax.devices()[0].platform.upper()} device(s)'
  with open(os.path.join(workdir, f'demo_results{suffix}.md'), 'w') as f:
    f.write(f'CVRL demo (seed {seed}, {variant} videos, {devices}, {minutes:.1f} min): '
            f'accuracy on the '
            f'{NUM_TEST} test videos, %\n\n{table}\n\nLinear top-1 by the fraction of training '
            f'labels the probe sees:\n\n{fractions}\n')
  with open(os.path.join(workdir, f'demo_results{suffix}.json'), 'w') as f:
    json.dump({'seed': seed, 'variant': variant, 'devices': devices, 'minutes': minutes,
               **results}, f, indent=2, sort_keys=True)
  banner('5/5 The report image: training curves, accuracy by label fraction, retrieval grid')
  report_path = write_report(os.path.join(workdir, f'demo_report{suffix}.png'), data_dir,
                             pretrain_dir, seed, results)
  minutes = (time.time() - start) / 60
  banner(f'Done in {minutes:.1f} min. Test accuracy (%) on {NUM_TEST} videos of 10 classes:')
  print(table)
  print(f'\nLinear top-1 (%) by the fraction of training labels:\n{fractions}')
  print(f'\nWritten to {workdir}/demo_results{suffix}.md and .json; the report image is '
        f'{report_path}; TensorBoard: tensorboard --logdir {pretrain_dir}', flush=True)
  return results


def main(argv=None) -> None:
  from cvrl_jax.data import demo as demo_data  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', default='demo_workdir', help='where everything is written')
  parser.add_argument('--seed', type=int, default=0, help='pretraining and evaluation seed')
  parser.add_argument('--variant', choices=demo_data.VARIANTS, default='clean',
                      help="the demo videos: 'clean' (digits on black) or 'nuisance' (with real "
                      "video's nuisances, on which CVRL does not yet beat random init)")
  args = parser.parse_args(argv)
  logs.setup_logging()
  startup.configure_process()
  run_demo(args.workdir, args.seed, args.variant)


if __name__ == '__main__':
  main()
