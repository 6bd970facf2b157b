"""Self-supervised objectives: `build_objective(config)` picks one by `config.objective.name`."""
import dataclasses
import importlib
from typing import Dict

import ml_collections

from cvrl_jax.data.plan import ClipPlan, ViewSpec  # noqa: F401
from cvrl_jax.objectives.base import Inputs, LossOutput, Objective  # noqa: F401

# name -> "module:Class", imported on demand so one method's import cost is not paid by others.
REGISTRY: Dict[str, str] = {
    'cvrl': 'cvrl_jax.objectives.cvrl:CVRL',
    'rho_simclr': 'cvrl_jax.objectives.rho_simclr:RhoSimCLR',
    'rho_moco': 'cvrl_jax.objectives.rho_moco:RhoMoCo',
    'rho_byol': 'cvrl_jax.objectives.rho_byol:RhoBYOL',
    'rho_swav': 'cvrl_jax.objectives.rho_swav:RhoSwAV',
    'vcop': 'cvrl_jax.objectives.vcop:VCOP',
    'shuffle_learn': 'cvrl_jax.objectives.shuffle_learn:ShuffleAndLearn',
    'opn': 'cvrl_jax.objectives.opn:OPN',
    'odd_one_out': 'cvrl_jax.objectives.odd_one_out:OddOneOut',
    'order_transform': 'cvrl_jax.objectives.order_transform:OrderTransform',
    'vtdl': 'cvrl_jax.objectives.vtdl:VTDL',
    'cate': 'cvrl_jax.objectives.cate:CATE',
    'cep': 'cvrl_jax.objectives.cep:CEP',
    'avbert': 'cvrl_jax.objectives.avbert:AVBERT',
}
# config.objective keys that replace a field of the objective's clip plan when not empty:
# augment_policies (one name per view), crop_area_range and crop_aspect_range (every view).
PLAN_OVERRIDE_KEYS = ('augment_policies', 'crop_area_range', 'crop_aspect_range')


def objective_config(name: str, **keys) -> ml_collections.ConfigDict:
  """config.objective for `name` with the method's keys, and the plan overrides empty (the
  method's own); for configs that replace base_config()'s CVRL objective."""
  if name not in REGISTRY:
    raise ValueError(f'{name!r} is not a known objective; choose one of {sorted(REGISTRY)}')
  return ml_collections.ConfigDict(
      dict(name=name, **keys, **{key: () for key in PLAN_OVERRIDE_KEYS}))


def build_objective(config: ml_collections.ConfigDict) -> Objective:
  """The objective `config.objective.name`, its clip plan resolved against config.data."""
  name = config.objective.name
  if name not in REGISTRY:
    raise ValueError(f'config.objective.name={name!r} is not a known objective; '
                     f'choose one of {sorted(REGISTRY)}')
  module_name, class_name = REGISTRY[name].split(':')
  objective = getattr(importlib.import_module(module_name), class_name)(config)
  objective.plan = _with_config_overrides(objective.plan, config.objective).resolve(config.data)
  return objective


def _with_config_overrides(plan: ClipPlan, oc: ml_collections.ConfigDict) -> ClipPlan:
  """The plan with the augmentation settings `config.objective` overrides (empty: keep)."""
  policies = tuple(oc.get('augment_policies', None) or ())
  if policies:  # the method's own policies, replaced (one name per view)
    if len(policies) != plan.num_views:
      raise ValueError(f'config.objective.augment_policies={policies}: need one augmentation '
                       f'policy per view, and the plan has {plan.num_views} views.')
    from cvrl_jax import augment  # pylint: disable=g-import-not-at-top
    for policy in policies:
      augment.get_policy(policy)  # an unknown name fails here, naming the known ones
    plan = dataclasses.replace(plan, views=tuple(
        dataclasses.replace(v, augment_policy=p) for v, p in zip(plan.views, policies)))
  for key in PLAN_OVERRIDE_KEYS[1:]:
    value = tuple(oc.get(key, None) or ())
    if value:  # one at a time, so an error names the key at fault
      plan = plan.replace_views(**{key: value})
      try:
        from cvrl_jax.data import plan as plan_lib  # pylint: disable=g-import-not-at-top
        plan_lib.check_ranges(plan)
      except ValueError as e:
        raise ValueError(f'config.objective.{key}={value}: {e}') from None
  return plan
