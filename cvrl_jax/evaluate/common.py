"""What the evaluation jobs share: start-up checks, the encoder, results.json, training, testing."""
import time
from typing import Any, Callable, Dict, Iterator, Mapping, Tuple

from absl import logging
from clu import metric_writers
import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from cvrl_jax import config_lib
from cvrl_jax import export
from cvrl_jax import optim
from cvrl_jax import paths
from cvrl_jax import sharding
from cvrl_jax import run_utils
from cvrl_jax.data import pipeline
from cvrl_jax.evaluate import features
from cvrl_jax.evaluate import views

PyTree = Any
RESULTS_FILE = 'results.json'
CONFIG_FILE = 'config.json'


def write_results(workdir: str, results: Mapping[str, float]) -> None:
  run_utils.write_json(paths.join(workdir, RESULTS_FILE),
                     {k: float(v) for k, v in results.items()})


def start_job(config: ml_collections.ConfigDict, workdir: str) -> Mesh:
  """Validates the config for an evaluation job, prepares the workdir, returns the mesh."""
  config_lib.validate(config)
  if config.data.num_classes <= 0:
    raise ValueError(f'config.data.num_classes must be set (> 0) for {config.job}.')
  for key, choices in (('test_mode', ('test_views', 'center_clip')),
                       ('knn_mode', ('test_views', 'center_clip'))):
    if config.eval[key] not in choices:
      raise ValueError(f'config.eval.{key} must be one of {choices}, got {config.eval[key]!r}.')
  if config.init_checkpoint and paths.absolute(config.init_checkpoint) == paths.absolute(workdir):
    raise ValueError(f'The workdir {workdir} is the init_checkpoint itself; give the evaluation '
                     'its own workdir so the pretraining run\'s config.json and results.json stay.')
  paths.makedirs(workdir)
  run_utils.write_json(paths.join(workdir, CONFIG_FILE), config.to_dict())
  mesh = sharding.make_mesh(config.mesh)
  logging.info('%s on a mesh %s of %d devices (%d processes).', config.job, dict(mesh.shape),
               mesh.size, jax.process_count())
  return mesh


def load_encoder(config: ml_collections.ConfigDict, mesh: Mesh
                 ) -> Tuple[nn.Module, PyTree, ml_collections.ConfigDict]:
  """The encoder named by config.init_checkpoint (random init when empty), replicated on `mesh`."""
  rng = jax.random.fold_in(jax.random.key(config.seed), 0)
  backbone, variables, model_cfg, source = export.load_for_config(
      config.init_checkpoint, config.model, mesh, rng)
  logging.info('Encoder: %s from %s.', export.describe(model_cfg), source)
  return backbone, variables, model_cfg


def metric_writer(workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard events from process 0 (progress goes to the log as readable lines instead)."""
  if jax.process_index() == 0:
    return metric_writers.AsyncMultiWriter([metric_writers.SummaryWriter(workdir)])
  return metric_writers.MultiWriter([])


class ClassifierEvaluator:
  """Top-1/top-5 on the eval split, softmax averaged over the views of config.eval.test_mode
  (the recipe's 10 temporal x 3 spatial views by default). big_vision's evaluator shape.

  `logits_fn(variables, video uint8 [B, V, T, H, W, 3]) -> logits [B, V, classes]`.
  """

  def __init__(self, logits_fn: Callable[[PyTree, jax.Array], jax.Array],
               config: ml_collections.ConfigDict, mesh: Mesh, *, prefix: str):
    def predict(variables, batch):
      probs = views.average_view_probabilities(logits_fn(variables, batch['video']))
      correct = views.topk_correct(probs, batch['label'], (1, 5))
      return {'top1': correct[1], 'top5': correct[5]}

    self.config = config
    self.mesh = mesh
    self.prefix = prefix
    self._inference = features.Inference(predict, mesh)

  def run(self, variables: PyTree) -> Iterator[Tuple[str, float]]:
    mode = self.config.eval.test_mode
    batches = features.eval_batches(self.config, self.mesh, split='eval', mode=mode)
    out = self._inference.run(variables, batches, name=f'{self.prefix} test ({mode})')
    yield f'{self.prefix}/top1', float(np.mean(out['top1']))
    yield f'{self.prefix}/top5', float(np.mean(out['top5']))
    yield f'{self.prefix}/num_test_videos', float(len(out['label']))


def log_results(job: str, results: Mapping[str, float]) -> None:
  logging.info('%s results: %s', job, ', '.join(f'{k} {v:.4g}' for k, v in sorted(results.items())))


def schedule_and_optimizer(config: ml_collections.ConfigDict, num_train_examples: int,
                           params: PyTree
                           ) -> Tuple[optax.Schedule, optax.GradientTransformation, int]:
  """config.optim's schedule and optimiser over the job's steps (config.num_epochs of the train
  split at config.batch_size, or config.num_train_steps); returns (schedule, optimiser, steps)."""
  num_steps = optim.total_steps(config, num_train_examples)
  if num_steps <= 0:
    raise ValueError(f'{config.job} would run 0 steps: {num_train_examples} training videos at '
                     f'batch {config.batch_size} for {config.num_epochs} epochs.')
  schedule = optim.learning_rate_schedule(
      config.optim, config.batch_size, optim.steps_per_epoch(config, num_train_examples), num_steps)
  return schedule, optim.make_optimizer(config.optim, schedule, params), num_steps


def training_clip_batches(config: ml_collections.ConfigDict, mesh: Mesh) -> Iterator[Dict]:
  """Endless global batches of one random training clip per video (the probe's and fine-tuning's
  input: random start, random resized crop; flips and the rest happen on device)."""
  host_batches = pipeline.make_eval_iterator(
      config.data, split='train', mode='train_clip', global_batch_size=config.batch_size,
      seed=config.seed, num_epochs=None)
  return (sharding.host_to_global({k: b[k] for k in features.PER_EXAMPLE_KEYS if k in b}, mesh)
          for b in host_batches)


def train_loop(train_step: Callable[[Any, Any], Tuple[Any, Mapping[str, jax.Array]]], state: Any,
               batches: Iterator[Any], num_steps: int, *, writer: metric_writers.MetricWriter,
               log_every_steps: int, examples_per_step: int, name: str
               ) -> Tuple[Any, Dict[str, float]]:
  """Runs `state, metrics = train_step(state, batch)` num_steps times with progress lines and
  TensorBoard scalars; stops with run_utils.NonFiniteLossError on a non-finite loss."""
  last_time, last_step = time.time(), 0
  metrics: Dict[str, float] = {}
  for step in range(1, num_steps + 1):
    state, step_metrics = train_step(state, next(batches))
    if step % log_every_steps == 0 or step == num_steps:
      metrics = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
      if not np.isfinite(metrics['loss']):
        raise run_utils.NonFiniteLossError(
            f'{name}: the loss became {metrics["loss"]} at step {step}; lower '
            'config.optim.base_lr.')
      now = time.time()
      steps_per_sec = (step - last_step) / max(now - last_time, 1e-9)
      last_time, last_step = now, step
      writer.write_scalars(step, metrics)
      logging.info('%s: %s', name, run_utils.progress_line(step, num_steps, metrics, steps_per_sec,
                                                         examples_per_step))
  writer.flush()
  return state, metrics
