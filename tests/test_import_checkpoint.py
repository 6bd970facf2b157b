"""Importing TF Model Garden R3D checkpoints: the mapping covers the real model's variable list,
the imported encoder computes the Model Garden block's function (TensorFlow's own ops), and
incomplete or foreign checkpoints stop with one sentence naming what is wrong."""
import json
import os

import jax
import numpy as np
import pytest
import tensorflow as tf

from cvrl_jax import config_lib
from cvrl_jax import export
from cvrl_jax import export_common
from cvrl_jax import import_checkpoint
from cvrl_jax import models

import weights_testlib

FIXTURE = os.path.join(weights_testlib.DATA_DIR, 'model_garden_r3d50_variables.json')
NOT_VARIABLES = ('_CHECKPOINTABLE_OBJECT_GRAPH', 'save_counter/.ATTRIBUTES/VARIABLE_VALUE')


def r3d50_config():
  cfg = config_lib.model_config()
  cfg.bn_epsilon = 1e-3
  return cfg


def test_mapping_covers_the_model_garden_r3d50_variables():
  fixture = json.load(open(FIXTURE))
  theirs = {name: tuple(shape) for name, shape in fixture['variables']
            if name not in NOT_VARIABLES}
  mapping = import_checkpoint.model_garden_mapping(r3d50_config(), 'backbone/')
  assert {m.theirs for m in mapping} == set(theirs)  # every variable mapped, none invented
  assert len(mapping) == fixture['num_model_variables'] == 265
  expected = export_common.flat_leaves(export.abstract_variables(
      models.build_backbone(r3d50_config()), jax.sharding.SingleDeviceSharding(jax.devices()[0])))
  assert {m.ours for m in mapping} == set(expected)
  for m in mapping:  # Keras' Conv3D kernel layout is ours: shapes agree without a transpose
    assert theirs[m.theirs] == expected[m.ours].shape, m
  assert sum(np.prod(s) for s in theirs.values()) == fixture['num_values'] == 31_725_248
  assert import_checkpoint.find_prefix(theirs, FIXTURE) == 'backbone/'
  cfg = import_checkpoint.infer_model_config(theirs, 'backbone/', FIXTURE, stem_temporal_stride=2,
                                             bn_epsilon=1e-3, bn_momentum=0.99)
  assert (cfg.depth, cfg.width_multiplier, cfg.stem_temporal_kernel) == (50, 1.0, 5)


@pytest.fixture(scope='module')
def model_garden_checkpoint(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('model_garden'))
  backbone = weights_testlib.model_garden_backbone(width=1 / 16, seed=0)
  return weights_testlib.save_checkpoint(backbone, directory), backbone


def test_tiny_checkpoint_has_the_model_garden_names(model_garden_checkpoint):
  prefix, _ = model_garden_checkpoint
  ours = {name for name, _ in tf.train.list_variables(prefix)}
  real = {name for name, _ in json.load(open(FIXTURE))['variables']}
  assert ours == real


def test_imported_encoder_computes_the_model_garden_features(model_garden_checkpoint, tmp_path):
  prefix, tf_backbone = model_garden_checkpoint
  output = str(tmp_path / 'imported')
  path, result = import_checkpoint.import_model_garden(prefix, output)
  assert result.num_mapped == 265 and result.prefix == 'backbone/'
  assert result.skipped == {'optimizer slots': 0, 'other variables': 2}
  backbone, variables, model_cfg = export_common.load_checkpoint(path)
  assert (model_cfg.depth, model_cfg.width_multiplier, model_cfg.bn_epsilon) == (50, 1 / 16, 1e-3)
  assert model_cfg.bn_momentum == 0.99  # Keras' momentum weighs the old average, as Flax's does
  clips = np.random.default_rng(1).uniform(0, 1, (2, 6, 32, 30, 3)).astype(np.float32)
  expected = weights_testlib.model_garden_features(tf_backbone, clips)
  got = np.asarray(backbone.apply(variables, clips, train=False))
  np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5 * np.abs(expected).max())
  # Evaluation jobs take it as init_checkpoint once config.model names the Model Garden's epsilon.
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
  job_cfg = config_lib.model_config()
  job_cfg.width_multiplier = 1 / 16
  with pytest.raises(ValueError, match='bn_epsilon 0.001 vs 1e-05'):
    export.load_for_config(path, job_cfg, mesh, jax.random.key(0))
  job_cfg.bn_epsilon = 1e-3
  assert export.load_for_config(path, job_cfg, mesh, jax.random.key(0))[3] == path
  # The checkpoint's epsilon is not stored; the default epsilon (1e-5) would be visibly off.
  wrong = weights_testlib.model_garden_features(tf_backbone, clips, epsilon=1e-5)
  assert np.abs(wrong - expected).max() > 1e-3 * np.abs(expected).max()


def _edited(prefix, tmp_path, add=None, drop=None, nan=None):
  """A copy of the checkpoint at `prefix` with a variable added, removed, or set to NaN."""
  reader = tf.train.load_checkpoint(prefix)
  values = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k not in NOT_VARIABLES and k != drop}
  if add:
    values[add] = np.zeros((3,), np.float32)
  if nan:
    values[nan] = np.full_like(values[nan], np.nan)
  out = str(tmp_path / 'ckpt')
  os.makedirs(os.path.dirname(out), exist_ok=True)
  tf.raw_ops.SaveV2(prefix=out, tensor_names=list(values), shape_and_slices=[''] * len(values),
                    tensors=[tf.constant(v) for v in values.values()])
  return out


def test_left_over_and_missing_variables_are_named(model_garden_checkpoint, tmp_path):
  prefix, _ = model_garden_checkpoint
  extra = 'backbone/layer_with_weights-3/_self_gating/kernel/.ATTRIBUTES/VARIABLE_VALUE'
  with pytest.raises(ValueError, match='map to nothing.*_self_gating'):
    import_checkpoint.read_model_garden(_edited(prefix, tmp_path / 'a', add=extra))
  gone = 'backbone/layer_with_weights-5/_norm2/moving_variance/.ATTRIBUTES/VARIABLE_VALUE'
  with pytest.raises(ValueError, match='lacks 1 variable.*layer_with_weights-5/_norm2'):
    import_checkpoint.read_model_garden(_edited(prefix, tmp_path / 'b', drop=gone))
  # A head beside the backbone (a classifier, a projection MLP) is skipped and counted.
  head = 'head/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE'
  result = import_checkpoint.read_model_garden(_edited(prefix, tmp_path / 'c', add=head))
  assert result.skipped['other variables'] == 1 and result.num_mapped == 265


def test_bad_inputs_fail_with_one_sentence(model_garden_checkpoint, tmp_path, capsys):
  prefix, _ = model_garden_checkpoint
  with pytest.raises(FileNotFoundError, match='not a readable TensorFlow checkpoint'):
    import_checkpoint.read_model_garden(str(tmp_path / 'nothing'))
  (tmp_path / 'taken').mkdir()
  (tmp_path / 'taken' / 'notes.txt').write_text('mine')
  with pytest.raises(ValueError, match='not an empty folder'):
    import_checkpoint.import_model_garden(prefix, str(tmp_path / 'taken'))
  assert (tmp_path / 'taken' / 'notes.txt').read_text() == 'mine'
  bad = 'backbone/layer_with_weights-5/_spatial_conv/kernel/.ATTRIBUTES/VARIABLE_VALUE'
  with pytest.raises(ValueError, match='stage2_block1/conv2/kernel has .* non-finite'):
    import_checkpoint.import_model_garden(_edited(prefix, tmp_path / 'nan', nan=bad),
                                          str(tmp_path / 'nan_out'))
  assert not (tmp_path / 'nan_out').exists() or not os.listdir(tmp_path / 'nan_out')
  # The entry points' shared body prints one sentence, exit status 2, and writes nothing.
  body = lambda: import_checkpoint.import_model_garden(str(tmp_path / 'nothing'),
                                                       str(tmp_path / 'out'))
  with pytest.raises(SystemExit) as exit_info:
    export_common.run(body, ['import_checkpoint'])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('Error: ') and 'not a readable' in err[0], err
  assert not (tmp_path / 'out').exists()
