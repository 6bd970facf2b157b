"""Backbone-only checkpoints: export the encoder of a pretraining run, load it anywhere.

    python -m cvrl_jax.export --workdir=DIR --output=PATH [--step=N] [--part=visual|audio]

An exported backbone is a directory:
  PATH/variables/           Orbax checkpoint of {'params': ..., 'batch_stats': ...} of the encoder
  PATH/backbone.json        {'format': ..., 'model': config.model as a dict, 'source': {...}}
                            (`--part=audio`: also 'part': 'audio', and 'model' is the audio CNN's
                            config, models/audio_resnet.py AUDIO_ARCHITECTURE_KEYS)
The JSON is written last, so a directory that has it is complete. An export writes only into a
new or empty folder, or over an earlier export (or a crashed one, which PATH/.export-in-progress
marks); anything else at PATH, such as a `variables/` folder of the user's, stays untouched and
the export stops with one sentence. Non-finite weights are never exported. Loading needs neither the
training state nor the optimiser: `load_backbone(PATH)` rebuilds the module from the JSON and
restores the variables. `load_backbone` also accepts a pretraining workdir (it then reads the
encoder out of the latest training checkpoint, WORKDIR/checkpoints/<step>/state, and the model
config out of WORKDIR/config.json), so evaluation jobs take either as `config.init_checkpoint`.

`--part=audio` exports the audio CNN of an AVBERT run instead (state params['audio_cnn'], its
config from the run's config.objective); `load_audio_cnn` loads it (or reads it out of an AVBERT
workdir) for the audio evaluation jobs (config.eval.modality='audio'). An audio export given
where a visual backbone is expected, or the reverse, stops with one sentence.
"""
import functools
import json
import os
import sys
from typing import Any, Mapping, Optional, Tuple

from absl import app
from absl import flags
from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import Mesh

from cvrl_jax import checkpoint as checkpoint_lib
from cvrl_jax import config_lib
from cvrl_jax import logs
from cvrl_jax import models
from cvrl_jax import paths
from cvrl_jax import sharding
from cvrl_jax import startup
from cvrl_jax.models import audio_resnet

PyTree = Any
FORMAT = 'cvrl_jax.backbone/1'
METADATA_FILE = 'backbone.json'
VARIABLES_DIR = 'variables'
IN_PROGRESS_FILE = '.export-in-progress'  # present while an export is written
# Pretraining workdir layout (cvrl_jax.trainer).
WORKDIR_CONFIG = 'config.json'
WORKDIR_CHECKPOINTS = 'checkpoints'
STATE_ITEM = 'state'
COLLECTIONS = ('params', 'batch_stats')
PARTS = ('visual', 'audio')  # what an export holds: the video backbone or AVBERT's audio CNN
STATE_PREFIX = {'visual': 'backbone', 'audio': 'audio_cnn'}  # their names in a training state
# Parameter shapes do not depend on the clip size: a small dummy clip builds them.
DUMMY_CLIP_SHAPE = (1, 4, 32, 32, 3)
# config.model keys that define the network's parameters or its function; the others (dtype,
# remat, conv_impl, BN momentum) only change how it is computed or trained.
ARCHITECTURE_KEYS = ('depth', 'width_multiplier', 'stem_temporal_kernel', 'stem_temporal_stride',
                     'bn_epsilon')


# ------------------------------------------------------------------------------------------------
# Model config <-> JSON.
# ------------------------------------------------------------------------------------------------
def model_config_from_dict(values: Mapping[str, Any], source: str) -> ml_collections.ConfigDict:
  """config.model defaults overridden by `values` (an older export, lacking newer keys, loads)."""
  cfg = config_lib.model_config()
  for key, value in values.items():
    if key not in cfg:
      raise ValueError(f'{source}: model config key {key!r} is unknown to this cvrl_jax version.')
    cfg[key] = value
  return cfg


def describe(model_cfg) -> str:
  if 'base_width' in model_cfg:  # an audio CNN's config
    return audio_resnet.describe(model_cfg)
  return f'R3D-{model_cfg.depth} (width {model_cfg.width_multiplier:g})'


def check_compatible(checkpoint_cfg: ml_collections.ConfigDict,
                     wanted_cfg: ml_collections.ConfigDict, path: str) -> None:
  """Raises a one-sentence ValueError when the checkpoint's architecture is not the config's."""
  diffs = [f'{key} {checkpoint_cfg[key]!r} vs {wanted_cfg[key]!r}' for key in ARCHITECTURE_KEYS
           if checkpoint_cfg[key] != wanted_cfg[key]]
  if diffs:
    raise ValueError(
        f'init_checkpoint {path} holds an {describe(checkpoint_cfg)} backbone but config.model '
        f'asks for an {describe(wanted_cfg)} one ({", ".join(diffs)}); set config.model to match '
        f'the pretraining run or use a matching checkpoint.')


def with_compute_settings(checkpoint_cfg: ml_collections.ConfigDict,
                          wanted_cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The checkpoint's architecture with the job's compute settings (dtype, remat, conv_impl)."""
  cfg = ml_collections.ConfigDict(wanted_cfg.to_dict())
  for key in ARCHITECTURE_KEYS:
    cfg[key] = checkpoint_cfg[key]
  return cfg


# ------------------------------------------------------------------------------------------------
# Abstract variables and checks.
# ------------------------------------------------------------------------------------------------
def dummy_input_shape(backbone: nn.Module) -> Tuple[int, ...]:
  """An input shape that builds every parameter of `backbone` (a clip, or a waveform batch)."""
  if isinstance(backbone, audio_resnet.AudioEncoder):
    return backbone.dummy_input_shape()
  return DUMMY_CLIP_SHAPE


def abstract_variables(backbone: nn.Module, leaf_sharding: jax.sharding.Sharding) -> PyTree:
  """{'params', 'batch_stats'} of `backbone` as ShapeDtypeStructs placed on `leaf_sharding`."""
  dummy = jnp.zeros(dummy_input_shape(backbone), jnp.float32)
  shapes = jax.eval_shape(lambda: backbone.init(jax.random.key(0), dummy, train=False))
  shapes = {name: shapes.get(name, {}) for name in COLLECTIONS}
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=leaf_sharding),
                      shapes)


def _flat_shapes(tree: PyTree) -> dict[str, Tuple[int, ...]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in flat}


def check_shapes(stored: PyTree, expected: PyTree, path: str, model_cfg) -> None:
  """Compares a checkpoint's array shapes with the ones the model config builds."""
  stored_shapes, expected_shapes = _flat_shapes(stored), _flat_shapes(expected)
  for name, shape in expected_shapes.items():
    if name not in stored_shapes:
      raise ValueError(f'{path} does not hold the weights of an {describe(model_cfg)} backbone '
                       f'(no {name}); it was written for another architecture or is incomplete.')
    if stored_shapes[name] != shape:
      raise ValueError(f'{path} does not hold the weights of an {describe(model_cfg)} backbone: '
                       f'{name} has shape {stored_shapes[name]}, expected {shape}.')
  extra = sorted(set(stored_shapes) - set(expected_shapes))
  if extra:
    raise ValueError(f'{path} holds weights that an {describe(model_cfg)} backbone does not have '
                     f'({extra[0]}, ...); it was written for another architecture.')


# ------------------------------------------------------------------------------------------------
# Export.
# ------------------------------------------------------------------------------------------------
class ExportError(OSError):
  """An export could not be written; the message says where and why, in one sentence."""


def _was_written_by_export(out: epath.Path) -> bool:
  """Whether `out` holds an export of ours (complete, or a crashed one)."""
  if (out / IN_PROGRESS_FILE).exists():
    return True
  try:
    return json.loads((out / METADATA_FILE).read_text()).get('format', '').startswith(
        'cvrl_jax.backbone/')
  except (OSError, ValueError, AttributeError):
    return False


def check_output(out: epath.Path) -> None:
  """Raises ExportError unless `out` is a folder an export may write: new, empty, or an earlier
  export (whose `variables/` and JSON are then replaced; nothing else in it is touched)."""
  if out.exists() and not out.is_dir():
    raise ExportError(f'The export output {out} is an existing file; give a folder (a new one or '
                      'an earlier export).')
  if out.exists() and (out / VARIABLES_DIR).exists() and not _was_written_by_export(out):
    raise ExportError(f'The export output {out} already holds a {VARIABLES_DIR}/ folder that no '
                      f'export wrote (no {METADATA_FILE}); it is left untouched: give another '
                      'output folder.')
  if out.exists() and (out / METADATA_FILE).exists() and not _was_written_by_export(out):
    raise ExportError(f'The export output {out} holds a {METADATA_FILE} that no cvrl_jax export '
                      'wrote; it is left untouched: give another output folder.')


def _write_error(out: epath.Path, error: BaseException) -> ExportError:
  return ExportError(f'Cannot write the export to {out} ({checkpoint_lib.describe_error(error)}).')


def export_backbone(output: str, variables: Mapping[str, PyTree],
                    model_cfg: ml_collections.ConfigDict, source: Optional[Mapping[str, Any]] = None,
                    part: str = 'visual') -> str:
  """Writes {'params', 'batch_stats'} of an encoder and its config.model to `output` (`part`
  'audio': of an audio CNN, with its audio config as the model).

  Collective in multi-process runs (every process calls it; the arrays may be sharded). An
  earlier export at `output` is replaced; anything else there makes it stop (check_output), as
  do NaN or infinite weights (ValueError), before anything is written. A failed write raises
  ExportError at once. Returns the absolute output path.
  """
  out = epath.Path(paths.absolute(output))
  tree = {name: variables.get(name, {}) for name in COLLECTIONS}
  bad = checkpoint_lib.non_finite_leaves(tree)
  if bad:
    raise ValueError(f'The backbone to export holds NaN or infinite values ({bad[0]}'
                     f'{", ..." if len(bad) > 1 else ""}); nothing was written to {out}.')
  check_output(out)
  metadata_file = out / METADATA_FILE
  try:
    if jax.process_index() == 0:
      out.mkdir(parents=True, exist_ok=True)
      (out / IN_PROGRESS_FILE).write_text(json.dumps({'pid': os.getpid()}))
      if metadata_file.exists():
        metadata_file.unlink()  # the export is incomplete until the new JSON is written
    checkpointer = ocp.StandardCheckpointer()
    try:
      checkpointer.save(out / VARIABLES_DIR, tree, force=True)
      checkpointer.wait_until_finished()
    finally:
      checkpointer.close()
    if jax.process_index() == 0:
      model = model_cfg.to_dict() if hasattr(model_cfg, 'to_dict') else dict(model_cfg)
      metadata = {'format': FORMAT, 'model': model, 'source': dict(source or {})}
      if part != 'visual':
        metadata['part'] = part
      metadata_file.write_text(json.dumps(metadata, indent=2, sort_keys=True))
      (out / IN_PROGRESS_FILE).unlink()
  except Exception as e:  # pylint: disable=broad-except  (any storage failure: one sentence)
    logging.debug('The export write failed:', exc_info=True)
    raise _write_error(out, e) from e
  logging.info('Exported the %s backbone to %s.', describe(model_cfg), out)
  return os.fspath(out)


def export_workdir(workdir: str, output: str, step: Optional[int] = None,
                   part: str = 'visual') -> str:
  """Exports the encoder (`part` 'audio': AVBERT's audio CNN) of a pretraining workdir's
  checkpoint (the latest unless `step`)."""
  if part not in PARTS:
    raise ValueError(f'--part must be one of {PARTS}, got {part!r}.')
  load = load_audio_cnn if part == 'audio' else load_backbone
  backbone, variables, model_cfg = load(workdir, step=step)
  del backbone
  return export_backbone(output, variables, model_cfg,
                         source={'workdir': paths.absolute(workdir),
                                 'step': _step_of(workdir, step)}, part=part)


# ------------------------------------------------------------------------------------------------
# Load.
# ------------------------------------------------------------------------------------------------
def is_export(path: str) -> bool:
  return (epath.Path(path) / METADATA_FILE).exists()


def is_workdir(path: str) -> bool:
  p = epath.Path(path)
  return (p / WORKDIR_CHECKPOINTS).is_dir() and (p / WORKDIR_CONFIG).exists()


def _read_json(path: epath.Path) -> dict:
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{path} is not valid JSON ({e}).') from e


def _checkpoint_manager(workdir: str) -> ocp.CheckpointManager:
  directory = epath.Path(workdir) / WORKDIR_CHECKPOINTS
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
  return ocp.CheckpointManager(directory, options=options)


def _step_of(workdir: str, step: Optional[int]) -> int:
  manager = _checkpoint_manager(workdir)
  steps = manager.all_steps()
  manager.close()
  if not steps:
    raise FileNotFoundError(f'The pretraining workdir {workdir} has no finished checkpoint yet.')
  if step is None:
    return max(steps)
  if step not in steps:
    raise FileNotFoundError(f'The pretraining workdir {workdir} has no checkpoint at step {step} '
                            f'(it has {sorted(steps)}).')
  return step


def workdir_state_dir(workdir: str, step: Optional[int] = None) -> epath.Path:
  """The Orbax directory of the training state at `step` (the latest if None) of a pretraining
  workdir; one sentence if it has no such checkpoint."""
  return epath.Path(workdir) / WORKDIR_CHECKPOINTS / str(_step_of(workdir, step)) / STATE_ITEM


def _restore(directory: epath.Path, target: PyTree, model_cfg: ml_collections.ConfigDict,
             prefix: Optional[str], path: str) -> PyTree:
  """Restores `target` (abstract {'params', 'batch_stats'}) from an Orbax PyTree directory; with
  `prefix` (a training state) collection c is read from tree[c][prefix], the rest is skipped."""
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    item_metadata = checkpointer.metadata(directory).item_metadata
  except (FileNotFoundError, ValueError, OSError) as e:
    raise FileNotFoundError(f'{path}: cannot read the checkpoint in {directory} ({e}).') from e
  stored = getattr(item_metadata, 'tree', None)
  if stored is None:
    raise FileNotFoundError(f'{path}: the checkpoint in {directory} is incomplete or damaged (it '
                            'has no readable array metadata); export or pretrain it again.')
  wanted = [c for c in COLLECTIONS if target[c]]
  inside = lambda tree: tree[prefix] if prefix else tree
  try:
    stored = {c: inside(stored[c]) for c in wanted}
  except KeyError as e:
    raise ValueError(f'{path} has no {e} weights under {prefix or "its top level"!r}; it is not a '
                     'checkpoint written by cvrl_jax (objectives keep their video encoder under '
                     '"backbone" and AVBERT its audio CNN under "audio_cnn").') from e
  check_shapes(stored, {c: target[c] for c in wanted}, path, model_cfg)
  item = {c: {prefix: target[c]} if prefix else target[c] for c in wanted}
  try:
    restored = checkpointer.restore(directory, args=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True))
  except Exception as e:  # pylint: disable=broad-except  (truncated or damaged array files)
    logging.debug('Restoring %s failed:', directory, exc_info=True)
    raise FileNotFoundError(f'{path}: the checkpoint in {directory} cannot be read '
                            f'({checkpoint_lib.describe_error(e)}); it is damaged.') from e
  finally:
    checkpointer.close()
  variables = {c: inside(restored[c]) if c in wanted else {} for c in COLLECTIONS}
  bad = checkpoint_lib.non_finite_leaves(variables)
  if bad:
    raise ValueError(f'{path}: the checkpoint in {directory} holds NaN or infinite weights '
                     f'({bad[0]}); it is damaged or from a run that diverged.')
  return variables


def _checked_path_sharding(path: str, mesh: Optional[Mesh]) -> jax.sharding.Sharding:
  """Where restored arrays go (replicated over `mesh`, else the default device), once `path` is
  known to exist (else one sentence)."""
  if not path:
    raise ValueError('No checkpoint path given.')
  if not paths.exists(path):
    raise FileNotFoundError(f'The checkpoint path {path} does not exist.')
  return (sharding.replicated(mesh) if mesh is not None
          else jax.sharding.SingleDeviceSharding(jax.devices()[0]))


def load_backbone(path: str, *, mesh: Optional[Mesh] = None, step: Optional[int] = None
                  ) -> Tuple[nn.Module, PyTree, ml_collections.ConfigDict]:
  """(backbone module, {'params', 'batch_stats'}, config.model) from an export or a pretraining
  workdir (its latest checkpoint, or `step`). Arrays are replicated over `mesh` if given, else on
  the default device. Missing or mismatched files raise one clear sentence naming `path`."""
  leaf_sharding = _checked_path_sharding(path, mesh)
  if is_export(path):
    metadata = _read_json(epath.Path(path) / METADATA_FILE)
    _check_part(path, metadata, 'visual')
    model_cfg = model_config_from_dict(metadata['model'], path)
    directory, prefix = epath.Path(path) / VARIABLES_DIR, None
  elif is_workdir(path):
    run_config = _read_json(epath.Path(path) / WORKDIR_CONFIG)
    if 'model' not in run_config:
      raise ValueError(f'{path}/{WORKDIR_CONFIG} has no "model" section.')
    model_cfg = model_config_from_dict(run_config['model'], f'{path}/{WORKDIR_CONFIG}')
    directory = workdir_state_dir(path, step)
    prefix = STATE_PREFIX['visual']
  else:
    raise FileNotFoundError(
        f'{path} is neither an exported backbone (no {METADATA_FILE}) nor a pretraining workdir '
        f'(no {WORKDIR_CHECKPOINTS}/ and {WORKDIR_CONFIG}).')
  backbone = models.build_backbone(model_cfg)
  target = abstract_variables(backbone, leaf_sharding)
  variables = _restore(directory, target, model_cfg, prefix, path)
  return backbone, variables, model_cfg


def _check_part(path: str, metadata: Mapping[str, Any], wanted: str) -> None:
  """The export's format is ours and it holds the `wanted` part, else one ValueError sentence."""
  if metadata.get('format') != FORMAT:
    raise ValueError(f'{path} is an export of format {metadata.get("format")!r}; this version '
                     f'of cvrl_jax reads {FORMAT!r}.')
  part = metadata.get('part', 'visual')
  if part == wanted:
    return
  if wanted == 'visual':
    raise ValueError(f'{path} holds the audio CNN of an AVBERT run, not a visual backbone; '
                     "evaluate it on sounds with config.eval.modality='audio' or export the "
                     'visual backbone (python -m cvrl_jax.export without --part=audio).')
  raise ValueError(f'{path} holds a {part} backbone, not an audio CNN; export the audio CNN of '
                   'an AVBERT run with python -m cvrl_jax.export --part=audio, or set '
                   "config.eval.modality='visual'.")


def audio_config_from_dict(values: Mapping[str, Any], source: str) -> dict:
  """An audio CNN config (AUDIO_ARCHITECTURE_KEYS) from an export's JSON, checked."""
  missing = [k for k in audio_resnet.AUDIO_ARCHITECTURE_KEYS if k not in values]
  if missing:
    raise ValueError(f'{source}: the audio CNN config lacks {missing}; export it again.')
  cfg = {k: values[k] for k in audio_resnet.AUDIO_ARCHITECTURE_KEYS}
  cfg['block_counts'] = [int(n) for n in cfg['block_counts']]
  audio_resnet.check_audio_config(cfg, where=source)
  return cfg


def load_audio_cnn(path: str, *, mesh: Optional[Mesh] = None, step: Optional[int] = None
                   ) -> Tuple[nn.Module, PyTree, dict]:
  """(AudioEncoder, {'params', 'batch_stats'}, audio CNN config) from an audio export
  (`--part=audio`) or an AVBERT pretraining workdir (its latest checkpoint, or `step`)."""
  leaf_sharding = _checked_path_sharding(path, mesh)
  if is_export(path):
    metadata = _read_json(epath.Path(path) / METADATA_FILE)
    _check_part(path, metadata, 'audio')
    audio_cfg = audio_config_from_dict(metadata['model'], path)
    directory, prefix = epath.Path(path) / VARIABLES_DIR, None
  elif is_workdir(path):
    run_config = _read_json(epath.Path(path) / WORKDIR_CONFIG)
    objective = run_config.get('objective', {})
    if 'audio_base_width' not in objective:
      raise ValueError(f'{path} is a pretraining run of objective {objective.get("name")!r}, '
                       'which has no audio CNN; give an AVBERT run or its audio export.')
    audio_cfg = audio_config_from_dict(
        audio_resnet.config_from_avbert(objective, run_config.get('model', {})),
        f'{path}/{WORKDIR_CONFIG}')
    directory = workdir_state_dir(path, step)
    prefix = STATE_PREFIX['audio']
  else:
    raise FileNotFoundError(
        f'{path} is neither an exported audio CNN (no {METADATA_FILE}) nor a pretraining workdir '
        f'(no {WORKDIR_CHECKPOINTS}/ and {WORKDIR_CONFIG}).')
  encoder = audio_resnet.build_audio_encoder(audio_cfg)
  variables = _restore(directory, abstract_variables(encoder, leaf_sharding), audio_cfg, prefix,
                       path)
  return encoder, variables, audio_cfg


def check_audio_compatible(checkpoint_cfg: Mapping[str, Any], wanted_cfg: Mapping[str, Any],
                           path: str) -> None:
  """One ValueError sentence when the checkpoint's audio CNN is not config.eval.audio's."""
  diffs = [f'{key} {checkpoint_cfg[key]!r} vs {wanted_cfg[key]!r}'
           for key in audio_resnet.AUDIO_ARCHITECTURE_KEYS
           if _plain(checkpoint_cfg[key]) != _plain(wanted_cfg[key])]
  if diffs:
    raise ValueError(
        f'init_checkpoint {path} holds an {audio_resnet.describe(checkpoint_cfg)} but '
        f'config.eval.audio asks for an {audio_resnet.describe(wanted_cfg)} '
        f'({", ".join(diffs)}); set config.eval.audio to match the pretraining run.')


def _plain(value):
  return list(value) if isinstance(value, (list, tuple)) else value


def load_audio_for_config(init_checkpoint: str, audio_cfg: Mapping[str, Any], mesh: Mesh,
                          rng: jax.Array, *, dtype: Any = jnp.float32,
                          spec_augment_rate: float = 0.0
                          ) -> Tuple[nn.Module, PyTree, dict, str]:
  """The audio CNN an audio evaluation job starts from: `init_checkpoint` checked against
  config.eval.audio, or a random initialisation of config.eval.audio when it is empty. Returns
  (AudioEncoder, variables, audio CNN config, description of the source)."""
  wanted = {k: audio_cfg[k] for k in audio_resnet.AUDIO_ARCHITECTURE_KEYS}
  audio_resnet.check_audio_config(wanted)
  if init_checkpoint:
    _, variables, ckpt_cfg = load_audio_cnn(init_checkpoint, mesh=mesh)
    check_audio_compatible(ckpt_cfg, wanted, init_checkpoint)
    source = init_checkpoint
  else:
    variables, source = None, 'random initialisation'
  encoder = audio_resnet.build_audio_encoder(wanted, dtype=dtype,
                                             spec_augment_rate=spec_augment_rate)
  if variables is None:
    variables = jax.device_put(_random_init(encoder, rng), sharding.replicated(mesh))
    variables = {c: variables.get(c, {}) for c in COLLECTIONS}
  return encoder, variables, wanted, source


def load_for_config(init_checkpoint: str, model_cfg: ml_collections.ConfigDict, mesh: Mesh,
                    rng: jax.Array) -> Tuple[nn.Module, PyTree, ml_collections.ConfigDict, str]:
  """The encoder an evaluation job starts from: `init_checkpoint`, checked against config.model,
  or a random initialisation of config.model when it is empty. Returns (module, variables,
  model config, description of the source)."""
  if init_checkpoint:
    _, variables, ckpt_cfg = load_backbone(init_checkpoint, mesh=mesh)
    check_compatible(ckpt_cfg, model_cfg, init_checkpoint)
    model_cfg = with_compute_settings(ckpt_cfg, model_cfg)
    return models.build_backbone(model_cfg), variables, model_cfg, init_checkpoint
  backbone = models.build_backbone(model_cfg)
  variables = jax.device_put(_random_init(backbone, rng), sharding.replicated(mesh))
  variables = {c: variables.get(c, {}) for c in COLLECTIONS}
  return backbone, variables, model_cfg, 'random initialisation'


@functools.partial(jax.jit, static_argnums=0)
def _random_init(backbone: nn.Module, rng: jax.Array) -> PyTree:
  """The backbone's initial variables; compiled once per architecture in a process."""
  return backbone.init(rng, jnp.zeros(dummy_input_shape(backbone), jnp.float32), train=False)


# ------------------------------------------------------------------------------------------------
# Command line.
# ------------------------------------------------------------------------------------------------
def _define_flags() -> None:
  # Defined only when run as a script: importing this module must not claim --workdir, which
  # cvrl_jax.main defines too.
  flags.DEFINE_string('workdir', None, 'Pretraining workdir to export from.', required=True)
  flags.DEFINE_string('output', None, 'Directory to write (default: WORKDIR/backbone).')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.DEFINE_enum('part', 'visual', PARTS, 'What to export: the visual backbone, or the audio '
                    'CNN of an AVBERT run (default output WORKDIR/audio_backbone).')


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logs.setup_logging()
  startup.configure_process()
  workdir = flags.FLAGS.workdir
  if not paths.exists(workdir):
    sys.exit(f'Error: the workdir {workdir} does not exist.')
  part = flags.FLAGS.part
  output = flags.FLAGS.output or paths.join(workdir,
                                            'audio_backbone' if part == 'audio' else 'backbone')
  try:
    path = export_workdir(workdir, output, flags.FLAGS.step, part=part)
  except (ValueError, OSError) as e:  # the export's own one-sentence errors, no traceback
    logging.debug('Traceback of the error below:', exc_info=True)  # shown with --verbosity=1
    sys.exit(f'Error: {e}')
  print(f'Exported the {"audio CNN" if part == "audio" else "backbone"} of {workdir} to {path}')


if __name__ == '__main__':
  startup.quiet_native_logs(startup.verbosity_from_argv(sys.argv))
  _define_flags()
  app.run(main)
