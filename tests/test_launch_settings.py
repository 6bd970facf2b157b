"""Multi-host settings from the environment (JAX_NUM_PROCESSES, JAX_PROCESS_ID with
JAX_COORDINATOR_ADDRESS): incomplete or malformed ones stop cvrl_jax.main with one sentence.

The working path, 2 processes set up this way, runs in tests/test_launch_tpu_pod.py.
"""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = [
    ({'JAX_NUM_PROCESSES': '2', 'JAX_PROCESS_ID': 'one', 'JAX_COORDINATOR_ADDRESS': 'h:1'},
     "Error: The environment variable JAX_PROCESS_ID='one' is not an integer."),
    ({'JAX_NUM_PROCESSES': '2', 'JAX_PROCESS_ID': '1'},
     'Error: Multi-host runs need all of --coordinator_address, --num_processes and --process_id '
     '(or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID).'),
]


def test_bad_multi_host_settings_are_one_sentence(tmp_path):
  base = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_COORDINATOR', 'SLURM_'))}
  base.update(JAX_PLATFORMS='cpu', PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')
  procs = [subprocess.Popen(  # both at once: each spends its time importing TensorFlow
      [sys.executable, '-m', 'cvrl_jax.main', '--config=configs/demo.py', f'--workdir={tmp_path}'],
      cwd=REPO, env={**base, **settings}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
      text=True) for settings, _ in CASES]
  for proc, (_, message) in zip(procs, CASES):
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == 1
    assert stderr.strip().splitlines()[-1] == message, stderr
    assert 'Traceback' not in stderr
