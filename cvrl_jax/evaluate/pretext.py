"""The pretext-accuracy monitor: a pretext objective's accuracy on held-out tuples of
data.eval_files during pretraining (every config.pretext_every_steps steps; trainer.MONITORS).

The tuples are the same at every call: the eval files in order, cut by the objective's clip
plan with a fixed seed, labels drawn from fixed per-example keys, the plan's augmentation with a
fixed key; the network runs in inference mode (BN running averages, no dropout). Videos shorter
than the plan's span and padding are not counted. VCOP selects models by this number.
"""
from typing import Any, Callable, Dict

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from cvrl_jax import augment
from cvrl_jax import sharding
from cvrl_jax.data import pipeline
from cvrl_jax.objectives import pretext as pretext_lib

MONITOR_SEED = 1234  # the held-out tuples' seed, apart from the run's


def make_online_monitor(config: ml_collections.ConfigDict, mesh: Mesh, objective: Any,
                        workdir: str) -> Callable[[int, Any], Dict[str, float]]:
  del workdir
  if not isinstance(objective, pretext_lib.PretextObjective):
    raise ValueError(f'config.pretext_every_steps > 0 needs a pretext objective; '
                     f'{config.objective.name!r} has no pretext labels.')
  if not config.data.eval_files and not config.data.tfds_name:
    raise ValueError('config.pretext_every_steps > 0 needs config.data.eval_files (the '
                     'held-out tuples).')
  plan = objective.plan
  tasks = tuple(objective.loss_weights)
  base_key = jax.random.key(MONITOR_SEED)
  augment_key, pretext_key = jax.random.split(base_key)

  @jax.jit
  def counts(params, batch_stats, batch):
    clips = augment.augment_batch(augment.example_keys(augment_key, batch['key']), batch['video'],
                                  plan.augment_policies)
    inputs = {'clips': clips, 'keys': augment.example_keys(pretext_key, batch['key']),
              **{name: batch[name] for name in plan.host_fields}}
    logits, labels, _ = objective.logits(params, batch_stats, inputs, base_key, train=False)
    counted = (batch['mask'] & batch['fits']).astype(jnp.float32)
    hits = {task: jnp.sum(counted * (jnp.argmax(logits[task], -1) == labels[task]))
            for task in tasks}
    return hits, jnp.sum(counted)

  def monitor(step: int, state: Any) -> Dict[str, float]:
    del step
    iterator = pipeline.make_plan_eval_iterator(
        config.data, plan, global_batch_size=config.batch_size, seed=MONITOR_SEED,
        max_examples=config.eval.monitor_max_examples)
    hits = {task: 0.0 for task in tasks}
    total = 0.0
    for batch in iterator:
      names = ('video', 'key', 'mask', 'fits') + plan.host_fields
      batch_hits, n = counts(state.params, state.batch_stats,
                             sharding.host_to_global({k: batch[k] for k in names}, mesh))
      batch_hits, n = jax.device_get((batch_hits, n))
      hits = {task: hits[task] + float(batch_hits[task]) for task in tasks}
      total += float(n)
    out = {f'monitor/pretext_{task}_accuracy': hits[task] / max(total, 1.0) for task in tasks}
    out['monitor/pretext_accuracy'] = out[f'monitor/pretext_{tasks[0]}_accuracy']
    out['monitor/pretext_tuples'] = total
    return out

  return monitor
