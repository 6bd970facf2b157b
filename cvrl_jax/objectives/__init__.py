"""Self-supervised objectives: `build_objective(config)` picks one by `config.objective.name`."""
import dataclasses
import importlib
from typing import Dict

import ml_collections

from cvrl_jax.objectives.base import LossOutput, Objective, ObjectiveSpec  # noqa: F401

# name -> "module:Class", imported on demand so one method's import cost is not paid by others.
REGISTRY: Dict[str, str] = {
    'cvrl': 'cvrl_jax.objectives.cvrl:CVRL',
    'rho_simclr': 'cvrl_jax.objectives.rho_simclr:RhoSimCLR',
    'rho_moco': 'cvrl_jax.objectives.rho_moco:RhoMoCo',
    'rho_byol': 'cvrl_jax.objectives.rho_byol:RhoBYOL',
    'rho_swav': 'cvrl_jax.objectives.rho_swav:RhoSwAV',
}
# config.objective keys that replace a field of the objective's ObjectiveSpec when not empty.
SPEC_OVERRIDE_KEYS = ('augment_policies', 'crop_area_range', 'crop_aspect_range')


def build_objective(config: ml_collections.ConfigDict) -> Objective:
  name = config.objective.name
  if name not in REGISTRY:
    raise ValueError(f'config.objective.name={name!r} is not a known objective; '
                     f'choose one of {sorted(REGISTRY)}')
  module_name, class_name = REGISTRY[name].split(':')
  objective = getattr(importlib.import_module(module_name), class_name)(config)
  return _with_config_overrides(objective, config.objective)


def _with_config_overrides(objective: Objective, oc: ml_collections.ConfigDict) -> Objective:
  """The objective with the augmentation settings `config.objective` overrides (empty: keep)."""
  policies = tuple(oc.get('augment_policies', None) or ())
  if policies:  # the method's own policies, replaced (one name per clip)
    from cvrl_jax import augment  # pylint: disable=g-import-not-at-top
    for policy in policies:
      augment.get_policy(policy)  # an unknown name fails here, naming the known ones
  for key in SPEC_OVERRIDE_KEYS:
    value = tuple(oc.get(key, None) or ())
    if value:  # one at a time, so an error names the key at fault
      try:
        objective.spec = dataclasses.replace(objective.spec, **{key: value})
      except ValueError as e:
        raise ValueError(f'config.objective.{key}={value}: {e}') from None
  return objective
