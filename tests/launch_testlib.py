"""Shared pieces of the launcher tests (tests/test_launch_*.py): waiting, logs, the references.

A launcher test runs the tiny training job of train_testlib as 2 processes x 4 CPU devices, stops
it with SIGTERM part-way, resumes it, and checks the losses against two independent runs: the
1-process run (the first steps agree to float rounding, see tests/test_multihost.py) and the
uninterrupted 2-process run started by hand (every step, the final loss included, agrees: same
programs, same reduction order).
"""
import json
import os
import re
import time
from typing import Callable

import numpy as np
import pytest

import train_testlib as lib

NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 4


def wait_for(condition: Callable[[], bool], timeout: float, what: str,
             diagnostics: Callable[[], str] = lambda: '') -> None:
  """Polls `condition` until it holds; after `timeout` s fails naming `what`, with `diagnostics`."""
  deadline = time.monotonic() + timeout
  while not condition():
    if time.monotonic() > deadline:
      pytest.fail(f'Timed out after {timeout:.0f} s waiting for {what}.\n{diagnostics()}')
    time.sleep(0.5)


def read_text(path: str) -> str:
  try:
    with open(path, errors='replace') as f:
      return f.read()
  except FileNotFoundError:
    return ''


def stopped_step(log: str) -> int:
  """N of the log's `Stopped by SIGTERM after step N` lines (every process prints the same N)."""
  steps = {int(s) for s in re.findall(r'Stopped by SIGTERM after step (\d+);', log)}
  assert len(steps) == 1, log
  return steps.pop()


def check_stopped_run(workdir: str, step: int) -> None:
  """A SIGTERM stop: a checkpoint at `step`, results.json with finished false at `step`."""
  assert 1 <= step < lib.NUM_STEPS
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', str(step)))
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert results['finished'] is False and results['step'] == step


def check_resumed_run(workdir: str, env) -> None:
  """The resumed run finished with the uninterrupted runs' losses (see the module docstring)."""
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert results['finished'] is True and results['step'] == lib.NUM_STEPS
  single = lib.uninterrupted_run(env.data, str(env.base / 'uninterrupted'))['workdir']
  two = lib.two_process_run(env.data, str(env.base / 'two_processes'), env.cache)['workdir']
  steps = range(1, lib.NUM_STEPS + 1)
  first = range(1, lib.CHECKPOINT_EVERY + 1)
  np.testing.assert_allclose(lib.losses(workdir, first), lib.losses(single, first), rtol=5e-5)
  np.testing.assert_allclose(lib.losses(workdir, steps), lib.losses(two, steps), rtol=1e-6)
