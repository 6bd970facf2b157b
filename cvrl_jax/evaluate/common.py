"""What the evaluation jobs share: start-up checks, the encoder, results.json, training, testing."""
import time
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Optional, Tuple

from absl import logging
from clu import metric_writers
import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from cvrl_jax import checkpoint as checkpoint_lib
from cvrl_jax import config_lib
from cvrl_jax import export
from cvrl_jax import optim
from cvrl_jax import paths
from cvrl_jax import sharding
from cvrl_jax import run_utils
from cvrl_jax import workdir as workdir_lib
from cvrl_jax.data import pipeline
from cvrl_jax.evaluate import features
from cvrl_jax.evaluate import views
from cvrl_jax.models import resnet3d

PyTree = Any
RESULTS_FILE = 'results.json'
CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'  # the training loop's checkpoints (train_loop)


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
  features.sound_windows(config)  # config.eval.modality and config.eval.audio, checked
  if config.init_checkpoint and paths.absolute(config.init_checkpoint) == paths.absolute(workdir):
    raise ValueError(f'The workdir {workdir} is the init_checkpoint itself; give the evaluation '
                     'its own workdir so the pretraining run\'s config.json and results.json stay.')
  if checkpoint_lib.has_checkpoints(paths.join(workdir, CHECKPOINT_DIR)):  # a resumed job
    workdir_lib.check_resume(workdir, config, workdir_lib.EVAL_RESUMABLE_KEYS)
  paths.makedirs(workdir)
  run_utils.write_json(paths.join(workdir, CONFIG_FILE), config.to_dict())
  mesh = sharding.make_mesh(config.mesh)
  logging.info('%s on a mesh %s of %d devices (%d processes).', config.job, dict(mesh.shape),
               mesh.size, jax.process_count())
  return mesh


def load_encoder(config: ml_collections.ConfigDict, mesh: Mesh
                 ) -> Tuple[nn.Module, PyTree, ml_collections.ConfigDict]:
  """The encoder named by config.init_checkpoint (random init when empty), replicated on `mesh`:
  the visual backbone of config.model, or with config.eval.modality='audio' the audio CNN of
  config.eval.audio (an models.audio_resnet.AudioEncoder: waveforms in, log-mel on the device;
  its 'model config' is then the audio CNN config)."""
  rng = jax.random.fold_in(jax.random.key(config.seed), 0)
  if features.modality(config) == 'audio':
    encoder, variables, audio_cfg, source = export.load_audio_for_config(
        config.init_checkpoint, config.eval.audio.to_dict(), mesh, rng,
        dtype=resnet3d.DTYPES[config.model.dtype],
        spec_augment_rate=float(config.eval.audio.spec_augment_rate))
    logging.info('Audio encoder: %s from %s.', export.describe(audio_cfg), source)
    return encoder, variables, audio_cfg
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
  """Top-1/top-5 on the eval split, softmax (or with config.eval.view_average='logits' the
  logits) averaged over the views of config.eval.test_mode (the recipe's 10 temporal x 3
  spatial views by default). big_vision's evaluator shape.

  `logits_fn(variables, *inputs) -> logits [B, V, classes]`, inputs the batch fields named by
  `input_keys`; by default the encoder's one input (features.model_input: the uint8 video
  [B, V, T, H, W, 3], or for audio evaluation the waveform windows float32 [B, V, A]).
  `batches_fn() -> host batches` replaces the split's evaluation batches of config.eval.test_mode
  (`description` names them in the log). After `run`, `outputs` holds the per-video 'top1',
  'top5', 'label' and, with keep_scores, 'scores' [N, classes] (the view-averaged scores the
  accuracies come from).
  """

  def __init__(self, logits_fn: Callable[..., jax.Array],
               config: ml_collections.ConfigDict, mesh: Mesh, *, prefix: str,
               input_keys: Optional[Tuple[str, ...]] = None,
               batches_fn: Optional[Callable[[], Iterable[Any]]] = None,
               description: Optional[str] = None, keep_scores: bool = False):
    how = config.eval.get('view_average', 'softmax')
    if how not in views.VIEW_AVERAGES:
      raise ValueError(f'config.eval.view_average must be one of {views.VIEW_AVERAGES}, got '
                       f'{how!r}')

    def predict(variables, batch):
      inputs = ((features.model_input(batch),) if input_keys is None
                else tuple(batch[k] for k in input_keys))
      scores = views.average_view_scores(logits_fn(variables, *inputs), how)
      correct = views.topk_correct(scores, batch['label'], (1, 5))
      out = {'top1': correct[1], 'top5': correct[5]}
      if keep_scores:
        out['scores'] = scores
      return out

    self.config = config
    self.mesh = mesh
    self.prefix = prefix
    self.outputs: Optional[Dict[str, np.ndarray]] = None
    self._batches_fn = batches_fn or (lambda: features.eval_batches(
        config, mesh, split='eval', mode=config.eval.test_mode))
    self._description = description or config.eval.test_mode
    keys = features.PER_EXAMPLE_KEYS + tuple(k for k in input_keys or ()
                                             if k not in features.PER_EXAMPLE_KEYS)
    self._inference = features.Inference(predict, mesh, keys)

  def run(self, variables: PyTree) -> Iterator[Tuple[str, float]]:
    out = self._inference.run(variables, self._batches_fn(),
                              name=f'{self.prefix} test ({self._description})')
    self.outputs = out
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


Batches = Iterator[Tuple[Any, Tuple[int, int]]]  # (global batch, stream position after it)


def training_clip_batches(config: ml_collections.ConfigDict, mesh: Mesh,
                          start_position: Tuple[int, int] = (0, 0)) -> Batches:
  """Endless global batches of one random training clip per video (the probe's and fine-tuning's
  input: random start, random resized crop; flips and the rest happen on device), each with this
  host's stream position after it; `start_position` continues a stream exactly."""
  host_batches = pipeline.make_eval_iterator(
      config.data, split='train', mode='train_clip', global_batch_size=config.batch_size,
      seed=config.seed, num_epochs=None, start_position=start_position,
      sound=features.sound_windows(config))
  return ((sharding.host_to_global({k: b[k] for k in features.PER_EXAMPLE_KEYS if k in b}, mesh),
           tuple(int(v) for v in b['position'])) for b in host_batches)


def abstract_like(tree: PyTree) -> PyTree:
  """ShapeDtypeStructs with the shardings of an existing tree of arrays (a restore target)."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), tree)


def train_loop(train_step: Callable[[Any, Any], Tuple[Any, Mapping[str, jax.Array]]],
               state: run_utils.TrainState, batches: Callable[[Tuple[int, int]], Batches],
               num_steps: int, *, config: ml_collections.ConfigDict, workdir: str,
               writer: metric_writers.MetricWriter, examples_per_step: int, name: str
               ) -> Tuple[run_utils.TrainState, Dict[str, float], bool]:
  """Runs `state, metrics = train_step(state, batch)` up to num_steps, resumable like pretraining.

  Checkpoints (state, the input position and the last metrics) go to WORKDIR/checkpoints every
  config.checkpoint.every_steps, at the last step and when the job is asked to stop (SIGTERM);
  a run that finds one there continues from it, reading the batches the uninterrupted run would
  have read, so its final state and metrics are the same. `batches(position)` yields (batch,
  position after it) from a stream position. Progress lines and TensorBoard scalars every
  config.log_every_steps; a non-finite loss stops with run_utils.NonFiniteLossError.
  Returns (state, the last step's metrics, finished): finished is False after a SIGTERM stop.
  """
  ckpt = checkpoint_lib.Checkpointer(
      paths.join(workdir, CHECKPOINT_DIR), every_steps=config.checkpoint.every_steps,
      keep=config.checkpoint.keep, async_save=config.checkpoint.async_save,
      keep_every_steps=config.checkpoint.keep_every_steps)
  position: Tuple[int, int] = (0, 0)
  metrics: Dict[str, float] = {}
  restored = ckpt.restore_latest(abstract_like(state))  # complete and finite, else the one before
  if restored is not None:
    resume_step, state, record = restored
    position = checkpoint_lib.position_for_process(
        record, jax.process_index(), jax.process_count(), config.data.host_split)
    metrics = {k: float(v) for k, v in record.get('metrics', {}).items()}
    logging.info('%s: resumed from %s at step %d.', name, ckpt.step_path(resume_step),
                 int(jax.device_get(state.step)))
  first_step = int(jax.device_get(state.step))
  preemption = run_utils.PreemptionWatcher()
  finished = True
  last_time, last_step = time.time(), first_step
  try:
    iterator = batches(position) if first_step < num_steps else iter(())
    for step in range(first_step + 1, num_steps + 1):
      batch, position = next(iterator)
      state, step_metrics = train_step(state, batch)
      ckpt.poll()  # a failed asynchronous checkpoint write stops the job now, named
      preempted = preemption.reached(step)
      is_last = step == num_steps
      save_now = ckpt.is_periodic(step) or is_last or preempted
      if step % config.log_every_steps == 0 or save_now:
        metrics = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        if not np.isfinite(metrics['loss']):
          raise run_utils.NonFiniteLossError(
              f'{name}: the loss became {metrics["loss"]} at step {step}; lower '
              'config.optim.base_lr.')
        now = time.time()
        steps_per_sec = (step - last_step) / max(now - last_time, 1e-9)
        last_time, last_step = now, step
        writer.write_scalars(step, metrics)
        logging.info('%s: %s', name, run_utils.progress_line(step, num_steps, metrics,
                                                             steps_per_sec, examples_per_step))
      if save_now:
        ckpt.save(step, state, position, config.data.host_split, extra={'metrics': metrics})
      if preempted and not is_last:
        ckpt.wait()
        logging.warning('%s: stopped by %s after step %d; saved %s. Run the same command to '
                        'resume.', name, preemption.signal_name, step, ckpt.step_path(step))
        finished = False
        break
  finally:
    preemption.close()
    ckpt.wait()
    ckpt.close()
    writer.flush()
  return state, metrics, finished
