"""The pretraining job: config -> sharded training -> checkpoints, metrics and results.json.

The whole run is in `pretrain()`, in the order it happens (banner sections); the state layout
and the train step come from `build_train_step()`, which bench/ also uses to compile the step
without running it. The pieces they call are small libraries: sharding (mesh, global batches),
optim (schedule, optimiser), checkpoint (Orbax + data position), the objective (network + loss),
the data pipeline and augment.

Global semantics come from the arrays being global: the batch is one array sharded over every
device, so BatchNorm statistics and the contrastive negatives cover the whole global batch.
"""
import importlib
import time
from typing import Any, Callable, Mapping

from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions
import jax
import ml_collections
import numpy as np

from cvrl_jax import checkpoint as checkpoint_lib
from cvrl_jax import config_lib
from cvrl_jax import export
from cvrl_jax import optim
from cvrl_jax import paths
from cvrl_jax import run_utils
from cvrl_jax import sharding
from cvrl_jax import workdir as workdir_lib
from cvrl_jax.data import pipeline
from cvrl_jax.data import records as records_lib
from cvrl_jax.data import sources
from cvrl_jax.objectives import build_objective
from cvrl_jax.run_utils import NonFiniteLossError, TrainState
from cvrl_jax.train_step import build_train_step

PyTree = Any


# Online monitors run every `config.<key>` steps (0 = never) on all processes. A monitor factory
# is `factory(config, mesh, objective, workdir) -> monitor`, and `monitor(step, state)` returns
# {metric name: float} for the log, TensorBoard and results.json; it may use
# state.params['backbone'] / state.batch_stats['backbone'] (the encoder).
MonitorFn = Callable[[int, TrainState], Mapping[str, float]]
MONITORS: dict[str, str] = {
    'knn_every_steps': 'cvrl_jax.evaluate.knn:make_online_monitor',
    'pretext_every_steps': 'cvrl_jax.evaluate.pretext:make_online_monitor',
}


def _import(target: str) -> Callable[..., Any]:
  module, name = target.split(':')
  return getattr(importlib.import_module(module), name)


SKIPPED_RECORDS = 'skipped_records'  # every host's, in a checkpoint's data record (data/records.py)


def pretrain(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Runs (or resumes) self-supervised pretraining; returns the final metrics (results.json).

  Before anything is written: the config is checked, and on resume compared with the workdir's
  config.json (workdir.check_resume); then the workdir is locked for the run (workdir.WorkdirLock).
  """
  config_lib.validate(config)
  if config.init_checkpoint:
    raise ValueError('config.init_checkpoint is for evaluation jobs; pretraining starts from '
                     'scratch or resumes from WORKDIR/checkpoints.')
  stored_config = None
  if checkpoint_lib.has_checkpoints(paths.join(workdir, 'checkpoints')):
    stored_config = workdir_lib.check_resume(workdir, config)
  lock = workdir_lib.WorkdirLock(workdir).acquire()
  try:
    return _pretrain_locked(config, workdir, stored_config)
  finally:
    lock.release()


def _pretrain_locked(config: ml_collections.ConfigDict, workdir: str,
                     stored_config: dict | None) -> dict[str, float]:
  """pretrain() once the config is checked and the workdir is this run's."""
  paths.makedirs(workdir)
  is_chief = jax.process_index() == 0

  # --------------------------------------------------------------------------------------------
  # Mesh and objective.
  # --------------------------------------------------------------------------------------------
  mesh = sharding.make_mesh(config.mesh)
  host_batch_size = sharding.check_batch_size(config.batch_size, mesh)
  objective = build_objective(config)
  plan = objective.plan
  logging.info('Mesh %s over %d devices (%d processes); global batch %d videos x %d clips, '
               '%d per host; sampler %r (%s).', dict(mesh.shape), mesh.size, jax.process_count(),
               config.batch_size, plan.num_views, host_batch_size, plan.sampler, plan.ordering)

  # --------------------------------------------------------------------------------------------
  # The run's length, from the data.
  # --------------------------------------------------------------------------------------------
  num_examples = sources.num_examples(config.data, 'train')
  num_steps = optim.total_steps(config, num_examples)
  steps_per_epoch = optim.steps_per_epoch(config, num_examples)
  if num_steps <= 0:
    raise ValueError(f'{config.num_epochs} epochs of {num_examples} videos at batch '
                     f'{config.batch_size} is less than one step; lower config.batch_size.')
  with config.unlocked():
    config.data.num_train_examples = num_examples
  workdir_lib.check_derived(stored_config, config, workdir)

  # --------------------------------------------------------------------------------------------
  # Model, optimiser and train state: restored from the newest checkpoint that is complete and
  # finite (checkpoint.Checkpointer.restore_latest), else created, already sharded over the mesh.
  # --------------------------------------------------------------------------------------------
  parts = build_train_step(config, mesh, objective, num_steps, steps_per_epoch)
  ckpt = checkpoint_lib.Checkpointer(
      paths.join(workdir, 'checkpoints'), every_steps=config.checkpoint.every_steps,
      keep=config.checkpoint.keep, async_save=config.checkpoint.async_save,
      keep_every_steps=config.checkpoint.keep_every_steps)
  restored = ckpt.restore_latest(parts.sharded_abstract_state())
  start_position = (0, 0)
  if restored is None:
    resume_step = None
    state = parts.create_state()
    first_step = 0
  else:
    resume_step, state, record = restored
    start_position = checkpoint_lib.position_for_process(
        record, jax.process_index(), jax.process_count(), config.data.host_split)
    first_step = int(jax.device_get(state.step))
    logging.info('Resumed from %s at step %d, data position (epoch, record) = %s.',
                 ckpt.step_path(resume_step), first_step, start_position)
  finished = workdir_lib.finished_results(workdir) if first_step >= num_steps else None
  if finished is not None and finished.get('step') == first_step:
    logging.info('Nothing to do: the run finished at step %d of %d; its results in %s are kept.',
                 first_step, num_steps, paths.join(workdir, 'results.json'))
    ckpt.close()
    if not export.is_export(paths.join(workdir, 'backbone')):
      _export_encoder(state, config, workdir, first_step)
    return finished
  run_utils.write_json(paths.join(workdir, 'config.json'), config.to_dict())
  writer = (metric_writers.AsyncMultiWriter([metric_writers.SummaryWriter(workdir)])
            if is_chief else metric_writers.MultiWriter([]))

  # --------------------------------------------------------------------------------------------
  # Input: this host's share of each global batch (uint8 videos, key words, stream position).
  # --------------------------------------------------------------------------------------------
  train_iter = pipeline.make_pretrain_iterator(
      config.data, plan, global_batch_size=config.batch_size, seed=config.seed,
      start_position=start_position)
  if restored is not None:  # the records this host skipped before it
    train_iter.checks.restore(records_lib.host_skip_state(
        record.get(SKIPPED_RECORDS), jax.process_index(), jax.process_count()))
  if first_step == 0:
    parameter_overview.log_parameter_overview(
        state.params, include_stats=jax.process_count() == 1, msg='Trainable parameters:')

  # --------------------------------------------------------------------------------------------
  # The train step (build_train_step), compiled ahead of time: the first log window then
  # measures steps, not compilation, and the hosts start stepping together.
  # --------------------------------------------------------------------------------------------
  compile_start = time.perf_counter()
  train_step = parts.compile(state)
  logging.info('Compiled the train step in %.1f s.', time.perf_counter() - compile_start)
  sharding.wait_for_all_processes('cvrl_train_step_compiled')

  # --------------------------------------------------------------------------------------------
  # Hooks: progress, profiler, online monitors, preemption.
  # --------------------------------------------------------------------------------------------
  clips_per_step = config.batch_size * plan.num_views
  profiler = (periodic_actions.Profile(logdir=workdir, num_profile_steps=5,
                                       first_profile=first_step + 10, every_secs=None)
              if config.profile and is_chief else None)
  monitors = [(config[key], _import(target)(config, mesh, objective, workdir))
              for key, target in MONITORS.items() if config[key] > 0]
  preemption = run_utils.PreemptionWatcher()
  if first_step >= num_steps:
    logging.info('Nothing to do: the checkpoint at step %d is at or past the %d steps.',
                 first_step, num_steps)

  # --------------------------------------------------------------------------------------------
  # The loop. Metrics stay on device until a log/checkpoint step, so the host runs ahead; every
  # fetched step is checked for NaN/Inf before anything is saved.
  # --------------------------------------------------------------------------------------------
  pending: list[tuple[int, dict]] = []
  last_saved = resume_step
  summary: dict[str, float] = {}
  position = start_position
  window_start, window_steps = time.perf_counter(), 0
  stopped_early = False

  def check_pending() -> dict[str, float]:
    """Fetches the pending steps' metrics; raises at the first non-finite one; returns means."""
    fetched = jax.device_get([m for _, m in pending])
    for (s, _), m in zip(pending, fetched):
      bad = [f'{what} is {m[key]}' for what, key in (('the loss', 'loss'),
                                                     ('the parameter norm', 'param_norm'))
             if not np.isfinite(m[key])]
      if bad:
        if last_saved is None:
          where = 'there is no checkpoint yet'
        elif last_saved == resume_step:
          where = (f'the latest checkpoint, {ckpt.step_path(last_saved)}, was checked complete '
                   'and finite when this run resumed from it')
        else:
          where = (f'the latest checkpoint is {ckpt.step_path(last_saved)}, saved when the loss '
                   'and parameters were finite')
        raise NonFiniteLossError(f'Training diverged at step {s} ({" and ".join(bad)}); '
                                 f'stopped without saving: {where}.')
    means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1]} if fetched else {}
    pending.clear()
    return means

  try:
    for step in range(first_step + 1, num_steps + 1):
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        batch = next(train_iter)
        position = tuple(int(v) for v in batch['position'])
        global_batch = sharding.host_to_global({k: batch[k] for k in parts.batch_spec}, mesh)
        with jax.transfer_guard('disallow'):
          state, metrics = train_step(state, global_batch)
      pending.append((step, metrics))
      window_steps += 1
      ckpt.poll()  # a failed asynchronous checkpoint write stops the run now, named
      if profiler is not None:
        profiler(step)

      preempted = preemption.reached(step)
      is_last = step == num_steps
      log_now = step % config.log_every_steps == 0 or is_last or preempted
      save_now = ckpt.is_periodic(step) or is_last or preempted
      if log_now or save_now:
        means = check_pending()
        if log_now and means:
          now = time.perf_counter()
          steps_per_sec = window_steps / (now - window_start)
          window_start, window_steps = now, 0
          summary = {f'train/{k}': v for k, v in means.items()}
          summary.update({'train/steps_per_sec': steps_per_sec,
                          'train/clips_per_sec': steps_per_sec * clips_per_step})
          writer.write_scalars(step, summary)
          logging.info('%s', run_utils.progress_line(step, num_steps, means, steps_per_sec,
                                                     clips_per_step))
      for every, monitor in monitors:
        if step % every == 0 or is_last:
          values = dict(monitor(step, state))
          writer.write_scalars(step, values)
          summary.update(values)
          logging.info('step %d | %s', step, ' | '.join(f'{k} {v:.4g}' for k, v in values.items()))
      if save_now:
        ckpt.save(step, state, position, config.data.host_split,
                  extra={SKIPPED_RECORDS: run_utils.allgather_json(train_iter.checks.state())})
        last_saved = step
      if preempted and not is_last:
        ckpt.wait()
        logging.warning('Stopped by %s after step %d; saved %s. Run the same command to '
                        'resume.', preemption.signal_name, step, ckpt.step_path(step))
        stopped_early = True
        break
    ckpt.wait()  # a failed last write is reported here, as that checkpoint's
  finally:
    preemption.close()
    ckpt.close()
    writer.flush()

  # --------------------------------------------------------------------------------------------
  # Results.
  # --------------------------------------------------------------------------------------------
  final_step = int(jax.device_get(state.step))
  results = dict(summary, step=final_step, num_train_steps=num_steps, finished=not stopped_early)
  # Undecodable records every host skipped (data/records.py).
  results.update(records_lib.skip_summary(run_utils.allgather_json(train_iter.checks.state())))
  run_utils.write_json(paths.join(workdir, 'results.json'), results)
  if not stopped_early:
    logging.info('Finished %d steps; results in %s.', final_step,
                 paths.join(workdir, 'results.json'))
    _export_encoder(state, config, workdir, final_step)
  return results


def _export_encoder(state: TrainState, config: ml_collections.ConfigDict, workdir: str,
                    step: int) -> None:
  """The encoder alone, loadable without the training state (cvrl_jax.export)."""
  export.export_backbone(
      paths.join(workdir, 'backbone'),
      {'params': state.params['backbone'], 'batch_stats': state.batch_stats.get('backbone', {})},
      config.model, source={'workdir': workdir, 'step': step})
