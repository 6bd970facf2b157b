"""Configs: the paper recipe in configs/*.py, validation, and bad configs failing at start with one
clear sentence (in-process for the trainer's checks, through `python -m cvrl_jax.main` for the
command line)."""
import os
import subprocess
import sys

import pytest

from cvrl_jax import config_lib
from cvrl_jax import optim
from cvrl_jax import trainer

# cvrl_jax.main is exercised as a command (it defines absl flags at import, as scripts do).
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ('cvrl_r3d50_k400', 'cvrl_r3d50_k600', 'cvrl_r3d152x2_k600', 'demo')


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_validates_and_names_its_data(name):
  config = config_lib.load_config_file(name)
  config_lib.validate(config)
  assert config.data.train_files and config.data.eval_files and config.data.num_classes > 0
  assert config.job == 'pretrain'


@pytest.mark.parametrize('name, videos, classes, steps', [
    ('cvrl_r3d50_k400', 215_570, 400, 42_103),  # 200 epochs at batch 1024
    ('cvrl_r3d50_k600', 366_016, 600, 71_488),  # the reference's step count
    ('cvrl_r3d152x2_k600', 366_016, 600, 71_488),
])
def test_paper_recipe(name, videos, classes, steps):
  """Numbers from ../shared/spec/cvrl.md, "Pretraining recipe" and "Data format"."""
  c = config_lib.load_config_file(name)
  assert (c.data.num_train_examples, c.data.num_classes) == (videos, classes)
  assert optim.total_steps(c, c.data.num_train_examples) == steps
  assert (c.batch_size, c.optim.name, c.optim.momentum, c.optim.nesterov) == (1024, 'sgd', 0.9, False)
  assert optim.peak_learning_rate(c.optim, c.batch_size) == pytest.approx(0.32)
  assert (c.optim.warmup_epochs, c.optim.schedule, c.optim.weight_decay) == (5.0, 'cosine', 1e-6)
  assert (c.model.dtype, c.model.bn_momentum, c.model.bn_epsilon) == ('bfloat16', 0.9, 1e-5)
  assert (c.data.num_frames, c.data.frame_stride, c.data.image_size) == (16, 2, 224)
  assert c.objective.temperature == 0.1
  depth, width = (152, 2.0) if 'r3d152x2' in name else (50, 1.0)
  assert (c.model.depth, c.model.width_multiplier) == (depth, width)


def test_configs_are_locked_against_misspelt_keys():
  config = config_lib.base_config()
  with pytest.raises(AttributeError):
    config.optim.bse_lr = 0.1


@pytest.mark.parametrize('key, value, message', [
    ('optim.name', 'adam', "config.optim.name must be one of ('sgd', 'lars'), got 'adam'."),
    ('model.dtype', 'float16', 'config.model.dtype must be one of'),
    ('data.host_split', 'hosts', 'config.data.host_split must be one of'),
    ('batch_size', 0, 'config.batch_size must be positive, got 0.'),
    ('optim.base_lr', -1.0, 'config.optim.base_lr must be >= 0, got -1.0.'),
    ('optim.momentum', 1.0, 'config.optim.momentum must be in [0, 1), got 1.0.'),
])
def test_validation_names_the_bad_value(key, value, message):
  config = config_lib.base_config()
  *parents, leaf = key.split('.')
  node = config
  for parent in parents:
    node = node[parent]
  node[leaf] = value
  with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')
                     .replace('[', r'\[')):
    config_lib.validate(config)


def test_no_steps_at_all_is_rejected():
  config = config_lib.base_config()
  config.num_epochs = 0
  with pytest.raises(ValueError, match='Set config.num_epochs or config.num_train_steps'):
    config_lib.validate(config)


@pytest.fixture
def demo_config(tmp_path):
  config = config_lib.load_config_file('demo', str(tmp_path / 'no_data_here'))
  config.model.depth = 18
  return config


def test_batch_that_does_not_split_over_the_devices(demo_config, tmp_path):
  demo_config.batch_size = 12  # 8 fake devices
  with pytest.raises(ValueError, match='config.batch_size=12 must be a positive multiple of the 8 '
                     'devices'):
    trainer.pretrain(demo_config, str(tmp_path / 'work'))


def test_missing_data_folder(demo_config, tmp_path):
  with pytest.raises(FileNotFoundError, match='The folder .*no_data_here does not exist'):
    trainer.pretrain(demo_config, str(tmp_path / 'work'))


def test_glob_matching_nothing(demo_config, tmp_path):
  (tmp_path / 'no_data_here').mkdir()
  with pytest.raises(FileNotFoundError, match='No files match the data pattern .*no_data_here'):
    trainer.pretrain(demo_config, str(tmp_path / 'work'))


def test_unknown_objective(demo_config, tmp_path):
  demo_config.objective.name = 'simclr_v9'
  with pytest.raises(ValueError, match="config.objective.name='simclr_v9' is not a known objective"):
    trainer.pretrain(demo_config, str(tmp_path / 'work'))


@pytest.mark.parametrize('flag, message', [
    ('--config.optim.bse_lr=0.1',
     "Unknown config key 'bse_lr' in --config.optim.bse_lr (did you mean 'base_lr'?)"),
    ('--config.optm.base_lr=0.1', "Unknown config key 'optm' in --config.optm.base_lr"),
    ('--config.job=distill', "config.job='distill' is not a known job"),
    ('--config.batch_size=many', 'Bad command line: flag --config.batch_size=many'),
])
def test_command_line_errors_are_one_sentence(flag, message, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  proc = subprocess.run(
      [sys.executable, '-m', 'cvrl_jax.main', '--config=configs/demo.py',
       f'--workdir={tmp_path}', flag], cwd=REPO, env=env, capture_output=True, text=True,
      timeout=120)
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert message in last, proc.stderr
  assert 'Traceback' not in proc.stderr


def test_augment_policies_override_the_objectives_own():
  from cvrl_jax.objectives import build_objective  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config_file('demo')
  assert build_objective(config).plan.augment_policies == ('cvrl_view1', 'cvrl_view2')
  config.objective.augment_policies = ('flip_only', 'none')
  plan = build_objective(config).plan
  assert plan.augment_policies == ('flip_only', 'none') and plan.num_views == 2
  config.objective.augment_policies = ('flip_only',)
  with pytest.raises(ValueError, match=r'augment_policies=\(.flip_only.,\): need one augmentation'):
    build_objective(config)
  config.objective.augment_policies = ('flip_only', 'sepia')
  with pytest.raises(ValueError, match="unknown augmentation policy 'sepia'"):
    build_objective(config)


def test_crop_ranges_override_the_objectives_own_and_bad_ones_fail():
  from cvrl_jax.objectives import build_objective  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config_file('cvrl_r3d50_k400')
  view = build_objective(config).plan.views[0]
  assert (view.crop_area_range, view.crop_aspect_range) == ((0.3, 1.0), (0.5, 2.0))  # CVRL's
  config.objective.crop_area_range = (0.6, 1.0)
  config.objective.crop_aspect_range = (0.75, 1.333)
  for view in build_objective(config).plan.views:
    assert (view.crop_area_range, view.crop_aspect_range) == ((0.6, 1.0), (0.75, 1.333))
  config.objective.crop_area_range = (0.8, 0.5)
  with pytest.raises(ValueError, match=r'crop_area_range=\(0.8, 0.5\).*0 < low <= high <= 1'):
    build_objective(config)
  config.objective.crop_area_range = ()
  config.objective.crop_aspect_range = (0.0, 2.0)
  with pytest.raises(ValueError, match=r'crop_aspect_range=\(0.0, 2.0\).*0 < low <= high'):
    build_objective(config)
