"""Compares CVRL, the rho-family and the order-based pretext tasks on equal terms:
`python -m cvrl_jax.compare`.

Every method pretrains on the demo videos with the demo's backbone, batch, number of steps and
seed (configs/demo.py; every other method's objective, clip plan, head and optimiser from
configs/<method>_demo.py), then the same evaluators run
on each encoder: the linear probe (top-1 on the test videos), kNN (top-1) and nearest-neighbour
retrieval (top-1), and on a randomly initialised encoder for reference. One table is printed
and written to WORKDIR/comparison.md (and .json):

  | method | rho | pretext acc. | linear top-1 | kNN top-1 | retrieval top-1 | steps/s |

The pretext accuracy is the training metric over the last log window (the contrastive methods
have none).

  python -m cvrl_jax.compare --workdir=/tmp/compare                 # all thirteen + random init
  python -m cvrl_jax.compare --workdir=/tmp/compare --methods=rho_moco,rho_byol --rho=4
  python -m cvrl_jax.compare --workdir=/tmp/compare --seeds=0,1,2    # mean ± sd over 3 runs

Runs resume: a method whose pretraining or evaluation already finished in WORKDIR is not run
again, so an interrupted comparison continues where it stopped. The demo data is written to
--data_dir first if it is not there.
"""
import json
import statistics
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections

from cvrl_jax import config_lib
from cvrl_jax import events
from cvrl_jax import logs
from cvrl_jax import paths
from cvrl_jax import startup

RHO_METHODS = ('rho_moco', 'rho_byol', 'rho_simclr', 'rho_swav')
PRETEXT_METHODS = ('vcop', 'shuffle_learn', 'opn', 'odd_one_out', 'order_transform')
# Temporal contrastive methods (docs/recipes/temporal.md): like the pretext tasks, their clip
# plans and heads come from configs/<method>_demo.py.
TEMPORAL_METHODS = ('vtdl', 'cate', 'cep')
# Methods that also learn from the sound (docs/recipes/avbert.md): the demo videos are then written
# with their sound track (the same frames); the table evaluates their visual backbone.
AUDIO_METHODS = ('avbert',)
METHODS = ('cvrl',) + RHO_METHODS + PRETEXT_METHODS + TEMPORAL_METHODS + AUDIO_METHODS
NAMES = {'cvrl': 'CVRL', 'rho_simclr': 'ρSimCLR', 'rho_moco': 'ρMoCo', 'rho_byol': 'ρBYOL',
         'rho_swav': 'ρSwAV', 'vcop': 'VCOP', 'shuffle_learn': 'Shuffle & Learn', 'opn': 'OPN',
         'odd_one_out': 'Odd-One-Out', 'order_transform': 'order + transform', 'vtdl': 'VTDL',
         'cate': 'CATE', 'cep': 'CEP', 'avbert': 'AVBERT'}
RESULTS_FILE = 'results.json'

_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for every run and the table.')
_DATA_DIR = flags.DEFINE_string('data_dir', 'demo_data', 'The demo videos (written if missing).')
_METHODS = flags.DEFINE_list('methods', list(METHODS), f'Methods to compare, of {METHODS}.')
_RHO = flags.DEFINE_integer('rho', 2, 'Clips per video for the rho-family (CVRL always uses 2).')
_EPOCHS = flags.DEFINE_integer('epochs', None, "Pretraining epochs of every method (default: "
                                "configs/demo.py's, 20).")
_STEPS = flags.DEFINE_integer('steps', 0, 'Pretraining steps of every method (> 0 overrides '
                              '--epochs; for a quick check).')
_LINEAR_EPOCHS = flags.DEFINE_integer('linear_epochs', 10, 'Epochs of the linear probe.')
_SEEDS = flags.DEFINE_list('seeds', ['0'], 'Seeds (data order, init, augmentation): every method '
                           'runs once per seed; the table gives mean ± standard deviation.')
_BASELINE = flags.DEFINE_boolean('baseline', True, 'Add a row for a randomly initialised encoder.')


def pretrain_config(method: str, data_dir: str, *, rho: int, epochs: Optional[int], steps: int,
                    seed: int) -> ml_collections.ConfigDict:
  """The demo run with `method`'s objective; budget and seed shared by every method (epochs
  None keeps the demo's)."""
  if method == 'cvrl':
    config = config_lib.load_config_file('demo', data_dir)
  elif method in METHODS:
    config = _method_demo_config(method, data_dir)
  else:
    raise ValueError(f'unknown method {method!r}; choose from {METHODS}')
  if method in RHO_METHODS:
    config.objective.rho = rho
  if epochs is not None:
    config.num_epochs = epochs
  config.num_train_steps = steps
  config.seed = seed
  return config


def _method_demo_config(method: str, data_dir: str) -> ml_collections.ConfigDict:
  """configs/<method>_demo.py (its clip plan, head and optimiser) with the CVRL demo's backbone,
  batch, epochs, seed and evaluation settings, so only the objective differs."""
  config = config_lib.load_config_file(f'{method}_demo', data_dir)
  cvrl = config_lib.load_config_file('demo', data_dir)
  for key in ('batch_size', 'num_epochs', 'num_train_steps', 'seed', 'model', 'mesh', 'eval'):
    config[key] = cvrl[key]
  for key in ('eval_num_frames', 'eval_frame_stride', 'eval_image_size', 'eval_resize',
              'eval_crop_size', 'eval_num_temporal_views', 'eval_num_spatial_views'):
    config.data[key] = cvrl.data[key]
  return config


def eval_config(pretrain: ml_collections.ConfigDict, job: str, encoder_dir: str,
                linear_epochs: int) -> ml_collections.ConfigDict:
  """The evaluation job `job` ('linear_eval' | 'knn_eval') on the encoder of encoder_dir (a
  pretraining workdir; '' for a random initialisation).

  The same for every method, on the frozen encoder and the centre clip of every video (one view
  instead of the recipe's 30 keeps the comparison within minutes on a CPU): the linear probe
  (SGD, LR 32 at batch 1024 scaled linearly to the demo batch, 1 warmup epoch then cosine, no
  weight decay) on cached, standardised features (as configs/demo_eval.py), and kNN (k = 200,
  votes weighted by exp(similarity / 0.07)).
  """
  config = ml_collections.ConfigDict(pretrain.to_dict())
  config.job = job
  config.init_checkpoint = encoder_dir
  config.num_epochs = linear_epochs
  config.num_train_steps = 0
  config.optim.name = 'sgd'
  config.optim.base_lr = 32.0
  config.optim.base_batch_size = 1024
  config.optim.weight_decay = 0.0
  config.optim.warmup_epochs = 1.0
  config.optim.schedule = 'cosine'
  config.optim.final_lr_fraction = 0.0  # not the pretraining's (CEP decays to LR / 1000)
  config.optim.momentum = 0.9
  config.eval.linear_cached_features = True
  config.eval.linear_standardize = True  # as configs/demo_eval.py
  config.eval.test_mode = 'center_clip'
  config.eval.knn_mode = 'center_clip'
  config.lock()
  return config


def training_speed(pretrain_dir: str) -> float:
  """Median steps/s over the run's log windows after the first (which includes compilation;
  a run of one window gives that one)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  _, windows = events.read_scalars(pretrain_dir).get('train/steps_per_sec', ((), ()))
  if not len(windows):
    raise ValueError(f'{pretrain_dir} has no train/steps_per_sec in its TensorBoard events.')
  return float(np.median(windows[1:] if len(windows) > 1 else windows))


def _check_same_run(config: ml_collections.ConfigDict, pretrain_dir: str) -> None:
  """Raises if pretrain_dir holds a run of another budget, seed or objective (it would resume)."""
  path = paths.join(pretrain_dir, 'config.json')
  if not paths.exists(path):
    return
  previous = paths.read_json(path)
  current = json.loads(json.dumps(config.to_dict()))  # tuples -> lists, as config.json has them
  for key in ('num_epochs', 'num_train_steps', 'seed', 'batch_size', 'objective'):
    if previous.get(key) != current[key]:
      raise ValueError(f'{pretrain_dir} holds a run with another {key} ({previous.get(key)!r}, '
                       f'now {current[key]!r}); give this comparison its own --workdir.')


def _finished(workdir: str, key: str) -> Dict[str, float]:
  """results.json of a finished run in workdir (with `key`), else {}."""
  path = paths.join(workdir, RESULTS_FILE)
  if not paths.exists(path):
    return {}
  results = paths.read_json(path)
  return results if key in results and results.get('finished', True) else {}


EVAL_JOBS = (('linear_eval', 'linear_cached_features/top1'), ('knn_eval', 'knn/top1'))
RETRIEVAL_KEY = 'retrieval/top1'  # from the knn_eval job


def evaluate(config: ml_collections.ConfigDict, encoder_dir: str, workdir: str, name: str,
             linear_epochs: int) -> Dict[str, float]:
  """{job: top-1} of the linear probe and kNN on encoder_dir's encoder ('' = random init)."""
  from cvrl_jax.evaluate import knn  # pylint: disable=g-import-not-at-top  (JAX after flags)
  from cvrl_jax.evaluate import linear  # pylint: disable=g-import-not-at-top
  jobs = {'linear_eval': linear.linear_eval, 'knn_eval': knn.knn_eval}
  top1 = {}
  for job, key in EVAL_JOBS:
    job_dir = paths.join(workdir, job)
    results = _finished(job_dir, key)
    if not results:
      logging.info('=== %s: %s ===', name, job)
      results = jobs[job](eval_config(config, job, encoder_dir, linear_epochs), job_dir)
    top1[job] = results[key]
    if job == 'knn_eval':
      top1['retrieval'] = results.get(RETRIEVAL_KEY)
  return top1


def run_method(method: str, workdir: str, data_dir: str, *, rho: int, epochs: Optional[int],
               steps: int, linear_epochs: int, seed: int) -> Dict[str, Any]:
  """Pretrains `method` and evaluates its encoder; returns one table row."""
  from cvrl_jax import trainer  # pylint: disable=g-import-not-at-top  (JAX after flag parsing)
  config = pretrain_config(method, data_dir, rho=rho, epochs=epochs, steps=steps, seed=seed)
  method_dir = paths.join(workdir, method)
  pretrain_dir = paths.join(method_dir, 'pretrain')
  _check_same_run(config, pretrain_dir)
  pretrained = _finished(pretrain_dir, 'step')
  if not pretrained:
    logging.info('=== %s: pretraining ===', NAMES[method])
    pretrained = trainer.pretrain(config, pretrain_dir)
  own_plan = method in PRETEXT_METHODS + TEMPORAL_METHODS
  row = {'method': NAMES[method],
         'rho': config.objective.get('rho', 2) if not own_plan else None,
         'steps_per_sec': training_speed(pretrain_dir), 'steps': pretrained['step'],
         'pretext_accuracy': pretrained.get('train/pretext_accuracy')}
  row.update(evaluate(config, pretrain_dir, method_dir, NAMES[method], linear_epochs))
  return row


def random_init_row(workdir: str, data_dir: str, *, linear_epochs: int,
                    seed: int) -> Dict[str, Any]:
  """The same evaluations on a randomly initialised encoder: what pretraining must beat."""
  config = pretrain_config('cvrl', data_dir, rho=2, epochs=None, steps=0, seed=seed)
  row = {'method': 'random init', 'rho': None, 'steps_per_sec': None, 'steps': 0,
         'pretext_accuracy': None}
  row.update(evaluate(config, '', paths.join(workdir, 'random_init'), 'random init',
                      linear_epochs))
  return row


def summarize(runs: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
  """One table row from one method's runs (one per seed): per-seed values kept as lists."""
  row = {'method': runs[0]['method'], 'rho': runs[0]['rho']}
  for key in ('pretext_accuracy', 'linear_eval', 'knn_eval', 'retrieval', 'steps_per_sec'):
    row[key] = None if runs[0].get(key) is None else [r[key] for r in runs]
  return row


def _cell(values: Optional[Sequence[float]], scale: float, digits: int) -> str:
  """'mean' for one run, 'mean ± sample standard deviation' for several, '—' for none."""
  if values is None:
    return '—'
  mean = scale * sum(values) / len(values)
  if len(values) == 1:
    return f'{mean:.{digits}f}'
  sd = scale * statistics.stdev(values)
  return f'{mean:.{digits}f} ± {sd:.{digits}f}'


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
  lines = ['| method | ρ | pretext acc. | linear top-1 | kNN top-1 | retrieval top-1 | steps/s |',
           '|---|---|---|---|---|---|---|']
  for r in rows:
    rho = '—' if r['rho'] is None else r['rho']
    lines.append(f"| {r['method']} | {rho} | {_cell(r.get('pretext_accuracy'), 100, 1)} | "
                 f"{_cell(r['linear_eval'], 100, 1)} | {_cell(r['knn_eval'], 100, 1)} | "
                 f"{_cell(r.get('retrieval'), 100, 1)} | {_cell(r['steps_per_sec'], 1, 2)} |")
  return '\n'.join(lines)


def _has_sound(shard: str) -> bool:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from cvrl_jax.data import dmvr  # pylint: disable=g-import-not-at-top
  for raw in tf.data.TFRecordDataset(shard).take(1):  # what sources' check_audio reads
    return int(tf.size(dmvr.parse_sequence_example(raw, audio=True)['audio'])) > 0
  return False


def ensure_demo_data(data_dir: str, *, audio: bool = False) -> None:
  """Writes the demo videos to `data_dir` unless they are there (with their sound if `audio`)."""
  shards = sorted(paths.glob(paths.join(data_dir, 'train-*-of-*.tfrecord')))
  if shards:
    if audio and not _has_sound(shards[0]):
      raise ValueError(f'the demo videos in {data_dir} have no sound, which '
                       f'{", ".join(AUDIO_METHODS)} needs: pass --data_dir=NEW_FOLDER (they are '
                       'written there with sound, the same frames) or leave those methods out.')
    return
  from cvrl_jax.data import demo  # pylint: disable=g-import-not-at-top
  logging.info('Writing the demo videos%s to %s.', ' with sound' * audio, data_dir)
  demo.make_demo_dataset(data_dir, audio=audio)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  unknown = set(_METHODS.value) - set(METHODS)
  if unknown:
    raise app.UsageError(f'--methods has {sorted(unknown)}; choose from {METHODS}.')
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required.')
  logs.setup_logging()
  startup.configure_process()
  try:
    seeds = [int(seed) for seed in _SEEDS.value]
  except ValueError:
    raise app.UsageError(f'--seeds must be integers, got {_SEEDS.value}.') from None
  try:
    ensure_demo_data(_DATA_DIR.value, audio=bool(set(_METHODS.value) & set(AUDIO_METHODS)))
  except ValueError as e:
    sys.exit(f'Error: {e}')
  start = time.time()
  runs: Dict[str, List[Dict[str, Any]]] = {}
  for seed in seeds:
    seed_dir = paths.join(_WORKDIR.value, f'seed_{seed}')
    for method in _METHODS.value:
      try:
        runs.setdefault(method, []).append(run_method(
            method, seed_dir, _DATA_DIR.value, rho=_RHO.value, epochs=_EPOCHS.value,
            steps=_STEPS.value, linear_epochs=_LINEAR_EPOCHS.value, seed=seed))
      except (ValueError, FileNotFoundError) as e:
        sys.exit(f'Error ({NAMES[method]}, seed {seed}): {e}')
    if _BASELINE.value:
      runs.setdefault('random_init', []).append(random_init_row(
          seed_dir, _DATA_DIR.value, linear_epochs=_LINEAR_EPOCHS.value, seed=seed))
  rows = [summarize(method_runs) for method_runs in runs.values()]
  table = format_table(rows)
  paths.makedirs(_WORKDIR.value)
  paths.write_text(paths.join(_WORKDIR.value, 'comparison.md'), table + '\n')
  paths.write_text(paths.join(_WORKDIR.value, 'comparison.json'),
                   json.dumps(rows, indent=2, ensure_ascii=False))
  print(table)
  print(f'({(time.time() - start) / 60:.1f} min; every run is in {_WORKDIR.value})')


if __name__ == '__main__':
  startup.quiet_native_logs(startup.verbosity_from_argv(sys.argv))
  app.run(main)
