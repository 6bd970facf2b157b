"""Evaluation jobs resume like pretraining: a SIGTERM saves and returns, the same call continues,
and the final metrics and every later step's loss equal an uninterrupted run's.

The signal is a real SIGTERM sent to this process when the job logs a chosen step (the job's
handler sets a flag that its loop reads after each step, as under a scheduler's preemption).
Tiny data and encoder of tests/test_eval_jobs.py.
"""
import json
import logging as std_logging
import os
import signal

from absl import logging
import pytest

from cvrl_jax.evaluate import finetune
from cvrl_jax.evaluate import linear
from test_eval_jobs import data, encoder_path, job_config, read_scalars  # pylint: disable=unused-import

NUM_STEPS = 6
STOP_AT = 2  # the SIGTERM arrives while step STOP_AT is logged


@pytest.fixture(autouse=True)
def info_logs():
  """The progress lines the SIGTERM is timed on are INFO records."""
  previous = logging.get_verbosity()
  logging.set_verbosity(logging.INFO)
  yield
  logging.set_verbosity(previous)


class SigtermAtStep(std_logging.Handler):
  """Sends SIGTERM to this process the first time a progress line of step `step` is logged."""

  def __init__(self, step: int):
    super().__init__()
    self.marker = f'step {step}/{NUM_STEPS} '
    self.sent = False

  def emit(self, record):
    if not self.sent and self.marker in record.getMessage():
      self.sent = True
      os.kill(os.getpid(), signal.SIGTERM)


def run_stopped_then_resumed(job, config, workdir):
  """The job with a SIGTERM at STOP_AT, then the same call again; returns (first, second) results
  and the step the stop saved."""
  handler = SigtermAtStep(STOP_AT)
  root = std_logging.getLogger()
  root.addHandler(handler)
  try:
    first = job(config, workdir)
  finally:
    root.removeHandler(handler)
  assert handler.sent
  assert first == {'finished': False}
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())
  assert len(saved) == 1 and STOP_AT <= saved[0] < NUM_STEPS  # read after the next dispatch
  second = job(config, workdir)
  return first, second, saved[0]


def check_same_as_uninterrupted(resumed, reference, resumed_dir, reference_dir, stop_step):
  assert resumed == reference  # bit-identical: same state, same batches, same programs
  with open(os.path.join(resumed_dir, 'results.json')) as f:
    assert json.load(f) == pytest.approx(reference)
  after = range(stop_step + 1, NUM_STEPS + 1)
  resumed_losses = dict(read_scalars(resumed_dir, 'loss'))
  reference_losses = dict(read_scalars(reference_dir, 'loss'))
  assert [resumed_losses[s] for s in after] == [reference_losses[s] for s in after]


@pytest.mark.parametrize('cached', [False, True], ids=['clips', 'cached_features'])
def test_linear_eval_resumes_exactly(data, encoder_path, tmp_path, cached):
  config = job_config(data, 'linear_eval', encoder_path, steps=NUM_STEPS)
  config.eval.linear_cached_features = cached
  config.optim.base_lr = 0.5
  reference = linear.linear_eval(config, str(tmp_path / 'uninterrupted'))
  _, resumed, stop_step = run_stopped_then_resumed(linear.linear_eval, config,
                                                   str(tmp_path / 'stopped'))
  check_same_as_uninterrupted(resumed, reference, str(tmp_path / 'stopped'),
                              str(tmp_path / 'uninterrupted'), stop_step)
  prefix = 'linear_cached_features' if cached else 'linear'
  assert f'{prefix}/top1' in resumed and f'{prefix}/train_loss' in resumed


def test_finetune_resumes_exactly(data, encoder_path, tmp_path):
  config = job_config(data, 'finetune', encoder_path, steps=NUM_STEPS)
  config.optim.base_lr = 0.05
  config.eval.finetune_dropout = 0.5  # the dropout key follows the restored step
  reference = finetune.finetune(config, str(tmp_path / 'uninterrupted'))
  _, resumed, stop_step = run_stopped_then_resumed(finetune.finetune, config,
                                                   str(tmp_path / 'stopped'))
  check_same_as_uninterrupted(resumed, reference, str(tmp_path / 'stopped'),
                              str(tmp_path / 'uninterrupted'), stop_step)


def test_a_finished_training_loop_is_not_repeated(data, encoder_path, tmp_path):
  """A job stopped after its last checkpoint (during the test pass) runs only the test again,
  with the last step's training metrics from the checkpoint."""
  config = job_config(data, 'linear_eval', encoder_path, steps=NUM_STEPS)
  config.eval.linear_cached_features = True
  first = linear.linear_eval(config, str(tmp_path))
  os.remove(os.path.join(tmp_path, 'results.json'))
  events = {n for n in os.listdir(tmp_path) if 'tfevents' in n}
  again = linear.linear_eval(config, str(tmp_path))
  assert again == first
  new_events = {n for n in os.listdir(tmp_path) if 'tfevents' in n} - events
  assert all(not read_scalars_in(str(tmp_path), n, 'loss') for n in new_events)


def read_scalars_in(workdir, name, tag):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return [e for e in tf.compat.v1.train.summary_iterator(os.path.join(workdir, name))
          for v in e.summary.value if v.tag == tag]


def test_knn_eval_keeps_its_finished_feature_passes(data, encoder_path, tmp_path, monkeypatch):
  """A kNN job stopped during its test-split pass repeats only that pass: the train split's
  features (the long pass) are read back from the workdir; another config computes its own."""
  from cvrl_jax.evaluate import features  # pylint: disable=g-import-not-at-top
  from cvrl_jax.evaluate import knn  # pylint: disable=g-import-not-at-top
  config = job_config(data, 'knn_eval', encoder_path)
  config.eval.knn_mode = 'center_clip'
  first = knn.knn_eval(config, str(tmp_path))
  os.remove(os.path.join(tmp_path, 'results.json'))
  os.remove(os.path.join(tmp_path, 'eval_features_center_clip.npz'))  # "stopped in that pass"
  passes = []
  original = features.Inference.run
  monkeypatch.setattr(features.Inference, 'run',
                      lambda self, *a, **k: passes.append(k['name']) or original(self, *a, **k))
  assert knn.knn_eval(config, str(tmp_path)) == first
  assert passes == ['eval features (center_clip)']

  passes.clear()
  config.seed = 1  # another job in the same workdir: nothing of the first is reused
  knn.knn_eval(config, str(tmp_path))
  assert passes == ['train features (center_clip)', 'eval features (center_clip)']


def test_a_resumed_job_with_another_encoder_stops_with_one_sentence(data, encoder_path, tmp_path):
  config = job_config(data, 'linear_eval', encoder_path, steps=NUM_STEPS)
  config.eval.linear_cached_features = True
  linear.linear_eval(config, str(tmp_path))
  config.init_checkpoint = ''  # the random-initialisation baseline in the same workdir
  with pytest.raises(ValueError, match=r'holds a run with another config \(init_checkpoint '):
    linear.linear_eval(config, str(tmp_path))
