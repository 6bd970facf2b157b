"""Two processes with 4 fake CPU devices each run the same steps as one process with 8.

With data.host_split='records' every process reads the global stream and keeps its half of each
global batch, so the global batch, and hence every loss, matches the single-process run up to
float reduction order. The processes meet through jax.distributed on a local coordinator port,
as on a multi-GPU cluster (`--coordinator_address/--num_processes/--process_id`).
"""
import os
import socket
import subprocess
import types

import numpy as np
import orbax.checkpoint as ocp
import pytest

import train_testlib as lib


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  base = tmp_path_factory.getbasetemp()
  cache = str(base / 'jax_cache')
  os.makedirs(cache, exist_ok=True)
  data = lib.make_demo_data(str(base / 'demo_data'))
  previous = lib.enable_compile_cache(cache)
  yield types.SimpleNamespace(cache=cache, data=data)
  lib.restore_compile_cache(previous)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_give_the_single_process_losses(env, tmp_path, tmp_path_factory):
  single = lib.uninterrupted_run(env.data, str(tmp_path_factory.getbasetemp() / 'uninterrupted'))
  single = single['workdir']

  multi = str(tmp_path / 'multi')
  port = _free_port()
  procs = [subprocess.Popen(
      lib.main_command(env.data, multi, f'--coordinator_address=localhost:{port}',
                       '--num_processes=2', f'--process_id={i}'),
      env=lib.subprocess_env(env.cache, num_devices=4), cwd=lib.REPO,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=900)[0])
  finally:
    for proc in procs:
      proc.kill()
  for proc, output in zip(procs, outputs):
    assert proc.returncode == 0, output
  assert 'process 1 of 2, 4 local / 8 global devices' in outputs[1]

  # The first steps agree to float rounding: the forward pass, the gradients all-reduced across
  # the two processes, the updates and the checkpoint at step 3. Later steps are not compared
  # tightly: the tiny network's gradients are huge (norm ~700) and its state ill-conditioned, so
  # the two runs' different reduction orders (8 devices in one process, 4 + 4 across processes)
  # grow ~100x a step (1e-5 relative at step 3, ~1e-2 at step 5), whatever the learning rate.
  compared = range(1, lib.CHECKPOINT_EVERY + 1)
  np.testing.assert_allclose(lib.losses(multi, compared), lib.losses(single, compared), rtol=5e-5)
  assert np.all(np.isfinite(lib.losses(multi, range(1, lib.NUM_STEPS + 1))))
  # Each process saved its own data position: 6 batches of 16 = the 64-video epoch 0 + 32.
  manager = ocp.CheckpointManager(os.path.join(multi, 'checkpoints'), item_names=('state', 'data'))
  record = manager.restore(lib.NUM_STEPS, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
  manager.close()
  assert record['data']['positions'] == [[1, 32], [1, 32]]
