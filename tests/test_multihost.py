"""Two processes with 4 fake CPU devices each run the same steps as one process with 8.

With data.host_split='records' every process reads the global stream and keeps its half of each
global batch, so the global batch, and hence every loss, matches the single-process run up to
float reduction order. The processes meet through jax.distributed on a local coordinator port,
as on a multi-GPU cluster (`--coordinator_address/--num_processes/--process_id`).
"""
import os

import numpy as np
import orbax.checkpoint as ocp

import train_testlib as lib
from train_testlib import env  # noqa: F401  (a fixture)


def test_two_processes_give_the_single_process_losses(env, tmp_path_factory):
  base = tmp_path_factory.getbasetemp()
  single = lib.uninterrupted_run(env.data, str(base / 'uninterrupted'))['workdir']
  run = lib.two_process_run(env.data, str(base / 'two_processes'), env.cache)
  multi, outputs = run['workdir'], run['outputs']
  assert 'process 1 of 2, 4 local / 8 global devices' in outputs[1]

  # The first steps agree to float rounding: the forward pass, the gradients all-reduced across
  # the two processes, the updates and the checkpoint at step 3. Later steps are not compared
  # tightly: the tiny network's gradients are huge (norm ~700) and its state ill-conditioned, so
  # the two runs' different reduction orders (8 devices in one process, 4 + 4 across processes)
  # grow ~100x a step (1e-5 relative at step 3, ~1e-2 at step 5), whatever the learning rate.
  compared = range(1, lib.CHECKPOINT_EVERY + 1)
  np.testing.assert_allclose(lib.losses(multi, compared), lib.losses(single, compared), rtol=5e-5)
  assert np.all(np.isfinite(lib.losses(multi, range(1, lib.NUM_STEPS + 1))))
  # Each process saved its own data position, after its own last record: 6 global batches of 16
  # = the 64-video epoch 0 + 32 records of epoch 1, of which process 0 took slots 0-7 of each.
  manager = ocp.CheckpointManager(os.path.join(multi, 'checkpoints'), item_names=('state', 'data'))
  record = manager.restore(lib.NUM_STEPS, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
  manager.close()
  assert record['data']['positions'] == [[1, 24], [1, 32]]
  assert record['data']['skipped_records'] == [{'read': 48, 'skipped': []}] * 2  # every host's
