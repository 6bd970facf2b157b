"""Learning-rate schedules, optimisers and weight-decay masks (docs/recipes/cvrl.md, "Pretraining recipe").

Weight decay: CVRL adds `weight_decay * sum(||w||^2 / 2)` over conv/dense kernels to the loss.
Its gradient is `weight_decay * w`, so adding `weight_decay * w` to the gradient before momentum
(`optax.add_decayed_weights` first in the chain) is the same update without computing the sum.
"""
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax

PyTree = Any

SCHEDULES = ('cosine', 'constant', 'step')
OPTIMIZERS = ('sgd', 'lars')


def peak_learning_rate(optim_cfg: ml_collections.ConfigDict, batch_size: int) -> float:
  """The linear scaling rule: base_lr * batch_size / base_batch_size."""
  return optim_cfg.base_lr * batch_size / optim_cfg.base_batch_size


def total_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
  """config.num_train_steps if > 0, else num_epochs full epochs of the global batch."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return int(config.num_epochs * num_train_examples // config.batch_size)


def steps_per_epoch(config: ml_collections.ConfigDict, num_train_examples: int) -> float:
  return num_train_examples / config.batch_size


def decay_boundaries(optim_cfg: ml_collections.ConfigDict, steps_per_epoch: float) -> list:
  """The 'step' schedule's decay steps: decay_steps as given, or decay_epochs in steps."""
  if optim_cfg.decay_steps:
    return [int(step) for step in optim_cfg.decay_steps]
  return [int(round(epoch * steps_per_epoch)) for epoch in optim_cfg.decay_epochs]


def learning_rate_schedule(optim_cfg: ml_collections.ConfigDict, batch_size: int,
                           steps_per_epoch: float, num_steps: int) -> optax.Schedule:
  """Linear warmup from 0 over warmup_epochs, then one of SCHEDULES:

  - 'cosine': cosine decay from the peak to peak * final_lr_fraction at num_steps;
  - 'constant': the peak;
  - 'step': the peak, times decay_factor at each of decay_epochs (or of decay_steps, for
    recipes counted in iterations), counted from the start of training, warmup included.

  The learning rate of update `s` (0-based) is schedule(s): 0 for the very first update, as in
  the reference's warmup.
  """
  peak = peak_learning_rate(optim_cfg, batch_size)
  warmup_steps = min(int(round(optim_cfg.warmup_epochs * steps_per_epoch)), num_steps)
  if optim_cfg.schedule == 'cosine':
    decay = optax.cosine_decay_schedule(peak, max(num_steps - warmup_steps, 1),
                                        alpha=float(optim_cfg.get('final_lr_fraction', 0.0)))
  elif optim_cfg.schedule == 'constant':
    decay = optax.constant_schedule(peak)
  elif optim_cfg.schedule == 'step':
    # join_schedules counts the decay's steps from the end of the warmup.
    decay = optax.piecewise_constant_schedule(
        peak, {step - warmup_steps: optim_cfg.decay_factor
               for step in decay_boundaries(optim_cfg, steps_per_epoch) if step > warmup_steps})
  else:
    raise ValueError(f'config.optim.schedule must be one of {SCHEDULES}, got {optim_cfg.schedule!r}.')
  if warmup_steps == 0:
    return decay
  warmup = optax.linear_schedule(0.0, peak, warmup_steps)
  return optax.join_schedules([warmup, decay], [warmup_steps])


def is_kernel(path: tuple, leaf: Any) -> bool:
  """True for conv and dense kernels: the leaves Flax names 'kernel'."""
  del leaf
  last = path[-1]
  name = getattr(last, 'key', getattr(last, 'name', None))
  return name == 'kernel'


def kernel_mask(params: PyTree) -> PyTree:
  """A pytree of bools like `params`: True for conv/dense kernels (decayed, LARS-adapted);
  False for biases, BatchNorm scales/offsets and every other parameter."""
  return jax.tree_util.tree_map_with_path(is_kernel, params)


def make_optimizer(optim_cfg: ml_collections.ConfigDict, learning_rate: optax.ScalarOrSchedule,
                   params: PyTree) -> optax.GradientTransformation:
  """SGD with momentum (default) or LARS; weight decay on kernels only.

  SGD: v = momentum * v + (g + wd * w); w -= lr * v (PyTorch/TF SGD, no dampening).
  LARS (optax.lars): u = lr * trust * ||w|| / ||g + wd * w|| * (g + wd * w) for kernels, lr * g
  for the rest; v = momentum * v + u; w -= v (the learning rate is inside the momentum trace).
  `params` may be abstract (jax.ShapeDtypeStruct leaves); only its structure is used.
  """
  mask = kernel_mask(params)
  if optim_cfg.name == 'sgd':
    return optax.chain(
        optax.add_decayed_weights(optim_cfg.weight_decay, mask=mask),
        optax.sgd(learning_rate, momentum=optim_cfg.momentum or None, nesterov=optim_cfg.nesterov))
  if optim_cfg.name == 'lars':
    # Biases and BatchNorm parameters are neither decayed nor trust-ratio adapted (You et al.).
    return optax.lars(learning_rate, weight_decay=optim_cfg.weight_decay, weight_decay_mask=mask,
                      trust_coefficient=optim_cfg.lars_trust_coefficient, trust_ratio_mask=mask,
                      momentum=optim_cfg.momentum, nesterov=optim_cfg.nesterov)
  raise ValueError(f'config.optim.name must be one of {OPTIMIZERS}, got {optim_cfg.name!r}.')


def apply_trainable_mask(optimizer: optax.GradientTransformation, mask: Optional[PyTree],
                         params: PyTree, new_params: PyTree, opt_state: PyTree,
                         new_opt_state: PyTree) -> tuple[PyTree, PyTree]:
  """Keeps frozen parameters (mask False) and their optimiser state exactly as they were.

  This is what PyTorch does for a parameter whose gradient is None (rho-SwAV's prototypes in
  the first epoch): no weight decay, no momentum accumulation, no update. `mask` leaves may be
  traced booleans (the mask can depend on the step).
  """
  if mask is None:
    return new_params, new_opt_state
  keep = lambda new, old, m: jnp.where(m, new, old)
  params = jax.tree.map(keep, new_params, params, mask)
  # The mask laid over the optimiser state: per-parameter leaves (momentum traces) follow the
  # parameter's mask, the rest (step counts) always advance.
  state_mask = optax.tree_utils.tree_map_params(
      optimizer, lambda _, m: m, new_opt_state, mask, transform_non_params=lambda _: True)
  opt_state = jax.tree.map(keep, new_opt_state, opt_state, state_mask)
  return params, opt_state

