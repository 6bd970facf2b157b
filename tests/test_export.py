"""Backbone export/load: the features of a loaded encoder equal the training-time encoder's, and
missing or mismatched checkpoints fail with one clear sentence."""
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cvrl_jax import checkpoint as checkpoint_lib
from cvrl_jax import config_lib
from cvrl_jax import export
from cvrl_jax import sharding
from cvrl_jax import run_utils
from cvrl_jax.objectives import build_objective


def tiny_config():
  config = config_lib.base_config()
  config.model.depth = 18
  config.model.width_multiplier = 0.125
  config.model.dtype = 'float32'
  config.model.conv_impl = 'conv3d'  # compiles faster on CPU than the default there, 'factorized'
  config.objective.head_hidden_dim = 16
  config.objective.head_output_dim = 8
  return config


def random_like(abstract, seed):
  """Non-trivial values for every leaf: kernels ~ N(0, 1/fan_in), BN variances in [0.5, 2]."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['var']"):
      return jnp.asarray(rng.uniform(0.5, 2.0, leaf.shape), leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
    return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


@pytest.fixture(scope='module')
def pretraining_workdir(tmp_path_factory):
  """A workdir laid out as the trainer writes it: config.json and checkpoints/<step>/state with a
  TrainState of the CVRL network (backbone + projection head) and its optimiser state."""
  config = tiny_config()
  objective = build_objective(config)
  clips = jnp.zeros((1, 2, 4, 32, 32, 3))
  params, batch_stats, aux = jax.eval_shape(objective.init, jax.random.key(0), clips)
  params, batch_stats = random_like(params, 1), random_like(batch_stats, 2)
  state = run_utils.TrainState(step=jnp.asarray(7, jnp.int32), params=params,
                               batch_stats=batch_stats, aux=aux, opt_state=optax.sgd(0.1, momentum=0.9).init(params))
  workdir = str(tmp_path_factory.mktemp('pretrain'))
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config.to_dict(), f)
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), every_steps=1, keep=2,
                                     async_save=False)
  ckpt.save(7, state, (0, 7), 'files')
  ckpt.wait()
  ckpt.close()
  return workdir, objective, params, batch_stats


@pytest.fixture(scope='module')
def clips():
  return jnp.asarray(np.random.default_rng(3).uniform(size=(2, 4, 32, 32, 3)), jnp.float32)


def training_time_features(objective, params, batch_stats, clips):
  features, _ = jax.jit(lambda v, x: objective.network.apply(v, x, train=False))(
      {'params': params, 'batch_stats': batch_stats}, clips)
  return np.asarray(features)


def loaded_features(path, clips):
  backbone, variables, _ = export.load_backbone(path)
  return np.asarray(jax.jit(lambda v, x: backbone.apply(v, x, train=False))(variables, clips))


def test_workdir_and_export_give_the_training_time_features(pretraining_workdir, clips, tmp_path):
  workdir, objective, params, batch_stats = pretraining_workdir
  expected = training_time_features(objective, params, batch_stats, clips)
  assert np.std(expected) > 1e-3  # the check below compares real features, not zeros
  np.testing.assert_allclose(loaded_features(workdir, clips), expected, rtol=1e-5, atol=1e-6)

  out = export.export_workdir(workdir, str(tmp_path / 'backbone'))
  metadata = json.loads((tmp_path / 'backbone' / export.METADATA_FILE).read_text())
  assert metadata['format'] == export.FORMAT and metadata['source']['step'] == 7
  assert metadata['model']['depth'] == 18 and metadata['model']['width_multiplier'] == 0.125
  np.testing.assert_allclose(loaded_features(out, clips), expected, rtol=1e-5, atol=1e-6)
  # Only the encoder was written: no projection head, no optimiser state.
  _, variables, _ = export.load_backbone(out)
  assert set(variables) == {'params', 'batch_stats'}
  assert 'projector' not in variables['params'] and 'stem_conv' in variables['params']


def test_export_command_line(pretraining_workdir, tmp_path):
  workdir = pretraining_workdir[0]
  out = tmp_path / 'cli_export'
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='')
  proc = subprocess.run([sys.executable, '-m', 'cvrl_jax.export', f'--workdir={workdir}',
                         f'--output={out}'], capture_output=True, text=True, env=env,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert export.is_export(str(out))


def test_mismatched_architecture_is_one_clear_sentence(pretraining_workdir, tmp_path):
  workdir = pretraining_workdir[0]
  mesh = sharding.make_mesh(tiny_config().mesh)
  for key, value, words in (('depth', 34, 'R3D-34'), ('width_multiplier', 0.25, 'width 0.25')):
    model_cfg = tiny_config().model
    model_cfg[key] = value
    with pytest.raises(ValueError, match=rf'holds an R3D-18 \(width 0\.125\) backbone but '
                                         rf'config\.model asks for an .*{words}'):
      export.load_for_config(workdir, model_cfg, mesh, jax.random.key(0))


def test_weights_that_do_not_fit_their_config(pretraining_workdir, tmp_path):
  out = export.export_workdir(pretraining_workdir[0], str(tmp_path / 'backbone'))
  metadata_file = tmp_path / 'backbone' / export.METADATA_FILE
  metadata = json.loads(metadata_file.read_text())
  metadata['model']['width_multiplier'] = 0.25
  metadata_file.write_text(json.dumps(metadata))
  with pytest.raises(ValueError, match=r'does not hold the weights of an R3D-18 \(width 0\.25\) '
                                       r'backbone: .* has shape'):
    export.load_backbone(out)


def test_missing_checkpoints(tmp_path):
  with pytest.raises(FileNotFoundError, match='nothing_here does not exist'):
    export.load_backbone(str(tmp_path / 'nothing_here'))
  (tmp_path / 'not_a_run').mkdir()
  with pytest.raises(FileNotFoundError, match='neither an exported backbone'):
    export.load_backbone(str(tmp_path / 'not_a_run'))
  empty_run = tmp_path / 'run'
  (empty_run / 'checkpoints').mkdir(parents=True)
  (empty_run / 'config.json').write_text(json.dumps(tiny_config().to_dict()))
  with pytest.raises(FileNotFoundError, match='has no finished checkpoint yet'):
    export.load_backbone(str(empty_run))


# ------------------------------------------------------------------------------------------------
# Faults (issue 18 items 4, 6, 7, 10): one sentence, nothing of the user's touched.
# ------------------------------------------------------------------------------------------------
def _encoder(pretraining_workdir):
  _, variables, model_cfg = export.load_backbone(pretraining_workdir[0])
  return variables, model_cfg


def test_export_never_touches_a_variables_folder_it_did_not_write(pretraining_workdir, tmp_path):
  variables, model_cfg = _encoder(pretraining_workdir)
  out = tmp_path / 'mine'
  (out / 'variables').mkdir(parents=True)
  (out / 'variables' / 'notes.txt').write_text('my own files')
  with pytest.raises(export.ExportError) as error:
    export.export_backbone(str(out), variables, model_cfg)
  assert str(error.value) == (f'The export output {out} already holds a variables/ folder that '
                              'no export wrote (no backbone.json); it is left untouched: give '
                              'another output folder.')
  assert sorted(os.listdir(out)) == ['variables']
  assert (out / 'variables' / 'notes.txt').read_text() == 'my own files'


def test_export_over_an_earlier_or_a_crashed_export_replaces_it(pretraining_workdir, tmp_path,
                                                                clips):
  workdir, objective, params, batch_stats = pretraining_workdir
  variables, model_cfg = _encoder(pretraining_workdir)
  out = tmp_path / 'export'
  export.export_backbone(str(out), variables, model_cfg)
  (out / 'README.txt').write_text('kept')  # a file of the user's next to the export
  (out / export.METADATA_FILE).unlink()  # as a crash during the write leaves it ...
  (out / export.IN_PROGRESS_FILE).write_text('{}')  # ... marked in progress
  export.export_backbone(str(out), variables, model_cfg)
  assert sorted(os.listdir(out)) == ['README.txt', 'backbone.json', 'variables']
  np.testing.assert_allclose(loaded_features(str(out), clips),
                             training_time_features(objective, params, batch_stats, clips),
                             rtol=1e-5, atol=1e-6)


def test_export_onto_a_file_or_a_read_only_folder_is_one_sentence_at_once(pretraining_workdir,
                                                                          tmp_path):
  variables, model_cfg = _encoder(pretraining_workdir)
  a_file = tmp_path / 'a_file'
  a_file.write_text('data')
  with pytest.raises(export.ExportError, match=r'^The export output .*a_file is an existing '
                                               r'file; give a folder'):
    export.export_backbone(str(a_file), variables, model_cfg)
  assert a_file.read_text() == 'data'

  read_only = tmp_path / 'read_only'
  read_only.mkdir()
  if os.geteuid() == 0:  # root writes through permissions: a read-only mount instead
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', str(read_only)],
                      capture_output=True).returncode != 0:
      pytest.skip('cannot mount a read-only tmpfs')
  else:
    read_only.chmod(0o555)
  try:
    start = time.time()
    with pytest.raises(export.ExportError) as error:
      export.export_backbone(str(read_only / 'out'), variables, model_cfg)
    assert time.time() - start < 30
    assert str(error.value).startswith(f'Cannot write the export to {read_only / "out"} (')
    assert 'read-only file system' in str(error.value) or 'permission denied' in str(error.value)
  finally:
    if os.geteuid() == 0:
      subprocess.run(['umount', '-l', str(read_only)], check=False)


def test_non_finite_weights_are_never_exported(pretraining_workdir, tmp_path):
  variables, model_cfg = _encoder(pretraining_workdir)
  broken = jax.tree.map(lambda x: x, variables)
  kernel = broken['params']['stem_conv']['kernel']
  broken['params']['stem_conv']['kernel'] = kernel.at[0, 0, 0, 0, 0].set(jnp.nan)
  with pytest.raises(ValueError, match=r"holds NaN or infinite values \(\['params'\]\['stem_conv'\]"
                                       r"\['kernel'\]\); nothing was written"):
    export.export_backbone(str(tmp_path / 'out'), broken, model_cfg)
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('damage', ['remove', 'empty'])
def test_a_broken_export_is_one_sentence(pretraining_workdir, tmp_path, damage):
  variables, model_cfg = _encoder(pretraining_workdir)
  out = tmp_path / 'export'
  export.export_backbone(str(out), variables, model_cfg)
  metadata = out / export.VARIABLES_DIR / '_METADATA'
  if damage == 'remove':
    metadata.unlink()
  else:
    metadata.write_text('')
  with pytest.raises(FileNotFoundError) as error:  # was AttributeError: 'NoneType' ... 'tree'
    export.load_backbone(str(out))
  assert str(error.value) == (f'{out}: the checkpoint in {out / "variables"} is incomplete or '
                              'damaged (it has no readable array metadata); export or pretrain '
                              'it again.')


def test_export_command_line_errors_are_one_line_without_traceback(pretraining_workdir, tmp_path):
  a_file = tmp_path / 'a_file'
  a_file.write_text('data')
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='')
  proc = subprocess.run([sys.executable, '-m', 'cvrl_jax.export',
                         f'--workdir={pretraining_workdir[0]}', f'--output={a_file}'],
                        capture_output=True, text=True, env=env, timeout=300,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.returncode == 1
  assert 'Traceback' not in proc.stderr + proc.stdout
  assert proc.stderr.strip().splitlines()[-1] == (
      f'Error: The export output {a_file} is an existing file; give a folder (a new one or an '
      'earlier export).')
  assert a_file.read_text() == 'data'
