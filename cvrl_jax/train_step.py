"""The train state's layout and the compiled pretraining step, built from a config alone.

`build_train_step()` is everything between a host batch and the updated state (on-device
augmentation, the objective's loss, gradients, the optimiser update), with no data pipeline,
checkpointing or logging, so it needs only JAX and its libraries: `trainer.pretrain()` runs it,
and bench/ compiles it on a machine that has no TensorFlow (bench/accelerator.py).
"""
import dataclasses
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from cvrl_jax import augment
from cvrl_jax import optim
from cvrl_jax import sharding
from cvrl_jax.objectives import base as objective_base
from cvrl_jax.run_utils import TrainState


@dataclasses.dataclass(frozen=True)
class TrainStepParts:
  """The train state's layout and the train step of a run, built without data or device memory.

  pretrain() creates (or restores) the state from these parts and compiles the step; benchmarks
  compile the step on `sharded_abstract_state()` alone (nothing allocated) to read its memory
  and collectives.
  """
  mesh: Mesh
  init_rng: jax.Array
  init_state: Callable[[jax.Array], TrainState]  # rng -> the initial (unsharded) state
  abstract_state: TrainState  # of jax.ShapeDtypeStruct
  state_sharding: TrainState  # of NamedSharding
  batch_spec: dict[str, jax.ShapeDtypeStruct]  # the global batch, with its sharding
  train_step: Callable[[TrainState, Mapping[str, jax.Array]],
                       tuple[TrainState, dict[str, jax.Array]]]  # python, not yet jitted
  schedule: optax.Schedule
  tx: optax.GradientTransformation

  def sharded_abstract_state(self) -> TrainState:
    """The state as ShapeDtypeStructs carrying their shardings (for restore and lower)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        self.abstract_state, self.state_sharding)

  def create_state(self) -> TrainState:
    """The initial state, created already sharded over the mesh."""
    # The classic (non-partitionable) generator for the initial values: XLA:CPU compiles the
    # partitionable one ~6x slower for 5-D conv kernels (seconds each); with it each device draws
    # a whole tensor and keeps its shard, a cost paid once and only under fsdp.
    with jax.threefry_partitionable(False):
      return jax.jit(self.init_state, out_shardings=self.state_sharding)(self.init_rng)

  def lower(self, state: TrainState | None = None) -> jax.stages.Lowered:
    """The step jitted with the state donated, lowered for `state` (default: abstract)."""
    batch_sharding = {k: v.sharding for k, v in self.batch_spec.items()}
    jitted = jax.jit(self.train_step, in_shardings=(self.state_sharding, batch_sharding),
                     out_shardings=(self.state_sharding, sharding.replicated(self.mesh)),
                     donate_argnums=0)
    return jitted.lower(self.sharded_abstract_state() if state is None else state,
                        self.batch_spec)

  def compile(self, state: TrainState | None = None) -> jax.stages.Compiled:
    """The compiled step (its memory_analysis() and as_text() describe what it will do)."""
    return self.lower(state).compile()


# Salt of the per-example pretext keys (inputs['keys']): folded into the augmentation's base key,
# so pretext draws are as deterministic as the augmentation and independent of it.
PRETEXT_SALT = 0x70726574


def batch_fields(plan, batch_size: int) -> dict[str, tuple[str, tuple[int, ...]]]:
  """{name: (dtype, global shape)} of the arrays the train step takes from a host batch: the
  plan's uint8 videos, the example keys, the plan's host fields and 'fits' when it skips."""
  fields = {'video': ('uint8', (batch_size,) + plan.clip_shape),
            'key': ('uint32', (batch_size, 2)),
            **plan.field_shapes(batch_size)}
  if plan.short_videos == 'skip':
    fields['fits'] = ('bool', (batch_size,))
  return fields


def objective_inputs(plan, batch: Mapping[str, jax.Array], clips: jax.Array,
                     pretext_rng: jax.Array) -> dict[str, jax.Array]:
  """The inputs mapping of Objective.loss (objectives/base.py `Inputs`) for one global batch."""
  inputs = {'clips': clips, 'keys': augment.example_keys(pretext_rng, batch['key'])}
  for name in plan.host_fields + (('fits',) if 'fits' in batch else ()):
    inputs[name] = batch[name]
  return inputs


def build_train_step(config: ml_collections.ConfigDict, mesh: Mesh,
                     objective: objective_base.Objective, num_steps: int,
                     steps_per_epoch: float) -> TrainStepParts:
  """The model, optimiser, state layout and train step of a run of `num_steps` updates.

  Sets the objective's training length (momentum / freeze schedules) and traces shapes only.
  """
  plan = objective.plan.resolve(config.data)
  objective.set_training_length(num_steps, steps_per_epoch)
  clip_shape = plan.clip_shape
  rng = jax.random.key(config.seed)
  init_rng, augment_rng, loss_rng = jax.random.split(rng, 3)
  pretext_rng = jax.random.fold_in(augment_rng, PRETEXT_SALT)
  abstract_params = jax.eval_shape(
      lambda r: objective.init(r, jnp.zeros((2,) + clip_shape, jnp.float32))[0], init_rng)
  schedule = optim.learning_rate_schedule(config.optim, config.batch_size, steps_per_epoch,
                                          num_steps)
  tx = optim.make_optimizer(config.optim, schedule, abstract_params)

  def init_state(r: jax.Array) -> TrainState:
    params, batch_stats, aux = objective.init(r, jnp.zeros((2,) + clip_shape, jnp.float32))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      aux=aux, opt_state=tx.init(params))

  abstract_state = jax.eval_shape(init_state, init_rng)
  state_sharding = sharding.state_shardings(abstract_state, mesh, config.mesh.fsdp_min_size)
  state_sharding = state_sharding.replace(aux=objective.aux_shardings(state_sharding.aux, mesh))
  batch_sharding = sharding.batch_sharding(mesh)

  # augment -> objective loss -> gradients -> optimiser -> objective aux.
  def train_step(state: TrainState, batch: Mapping[str, jax.Array]):
    step = state.step
    keys = augment.example_keys(augment_rng, batch['key'])
    clips = augment.augment_batch(keys, batch['video'], plan.augment_policies)
    clips = jax.lax.with_sharding_constraint(clips, batch_sharding)
    inputs = objective_inputs(plan, batch, clips, pretext_rng)

    def loss_fn(params):
      out = objective.loss(params, state.batch_stats, state.aux, inputs,
                           jax.random.fold_in(loss_rng, step), step)
      return out.loss.astype(jnp.float32), (out.batch_stats, out.aux, out.metrics)

    (loss, (batch_stats, aux, objective_metrics)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    mask = objective_base.expand_mask(objective.trainable_mask(step), state.params)
    if mask is not None:
      grads = jax.tree.map(lambda g, m: jnp.where(m, g, 0.0), grads, mask)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    params, opt_state = optim.apply_trainable_mask(
        tx, mask, state.params, params, state.opt_state, opt_state)
    aux = objective.update_aux(params, aux, step)
    metrics = {'loss': loss, **objective_metrics, 'learning_rate': schedule(step),
               'grad_norm': optax.tree.norm(grads), 'param_norm': optax.tree.norm(params)}
    if 'fits' in batch:  # videos too short for the plan's span, left out of this step's loss
      metrics['short_videos'] = jnp.sum(~batch['fits'])
    metrics = jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), metrics)
    new_state = TrainState(step=step + 1, params=params, batch_stats=batch_stats, aux=aux,
                           opt_state=opt_state)
    return new_state, metrics

  batch_spec = {name: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
                for name, (dtype, shape) in batch_fields(plan, config.batch_size).items()}
  return TrainStepParts(mesh=mesh, init_rng=init_rng, init_state=init_state,
                        abstract_state=abstract_state, state_sharding=state_sharding,
                        batch_spec=batch_spec, train_step=train_step, schedule=schedule, tx=tx)
