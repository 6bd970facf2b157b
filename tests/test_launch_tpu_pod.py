"""launch/tpu_pod.sh, every subcommand, against a stand-in gcloud and a pod of 2 local workers.

tests/fake_gcloud/gcloud records each call and runs `--command` on the workers: processes in their
own PID and mount namespaces (so the script's pkill/pgrep see one worker's processes, as on a VM of
its own), each with its own home folder and Python environment, sharing this machine's file system
(the stand-in for the gs:// bucket) and network. The test checks the exact commands a
pod would receive, and runs them: `setup` copies the checkout and pip-installs it on every worker,
`run` starts 2 processes that form one jax.distributed run, `log` follows worker 0, `stop` makes
every worker save and exit as SIGTERM does, and `run` again resumes to the uninterrupted run's
losses.

Where a real pod differs: a TPU VM finds its peers through the TPU metadata server, here each
worker's environment names them (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, read
by cvrl_jax.main); and the workers' pip works offline without dependencies (PIP_NO_INDEX,
PIP_NO_DEPS): jax, flax, ... come from the test's own environment, and libtpu, which jax[tpu] adds
on a TPU VM, is not installed. Without `unshare`/`nsenter` (util-linux) or the rights to make
namespaces, the test is skipped and says why.
"""
import json
import os
import shutil
import signal
import site
import subprocess
import sys
import threading

import pytest

import launch_testlib
import train_testlib as lib
from train_testlib import env  # noqa: F401  (a fixture)

SCRIPT = os.path.join(lib.REPO, 'launch', 'tpu_pod.sh')
FAKE_GCLOUD = os.path.join(lib.REPO, 'tests', 'fake_gcloud')
POD, ZONE = 'test-pod', 'us-central2-b'
TRAINER = '^python3 -m cvrl_jax.main'

# A worker's process 1 in its namespaces: reaps the orphans the workers' background runs leave, as
# init does.
_WORKER_INIT = """
import os, time
print('ready', flush=True)
while True:
  try:
    os.wait()
  except ChildProcessError:
    time.sleep(0.2)
"""


class LocalPod:
  """Workers for tests/fake_gcloud/gcloud, described in `pod.json` in `folder`."""

  def __init__(self, folder: str, num_workers: int, worker_env: dict[str, str]):
    self.folder = folder
    self.description = os.path.join(folder, 'pod.json')
    self.calls_file = os.path.join(folder, 'calls.jsonl')
    self.inits: list[subprocess.Popen] = []
    self.homes = [os.path.join(folder, f'worker-{i}', 'home') for i in range(num_workers)]
    self.pythons = [os.path.join(folder, f'worker-{i}', 'python') for i in range(num_workers)]
    self._worker_env = worker_env

  def start(self) -> None:
    port = lib.free_port()
    workers = []
    for i, (home, python) in enumerate(zip(self.homes, self.pythons)):
      os.makedirs(home)
      self._make_python(python)
      init = subprocess.Popen(
          ['unshare', '--pid', '--mount-proc', '--fork', '--kill-child', sys.executable, '-c',
           _WORKER_INIT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
          text=True)
      self.inits.append(init)
      if init.stdout.readline().strip() != 'ready':
        raise OSError(init.stderr.read().strip() or f'unshare exited with {init.wait()}')
      env = {**self._worker_env, 'PATH': f'{python}/bin:/usr/local/bin:/usr/bin:/bin',
             'JAX_COORDINATOR_ADDRESS': f'localhost:{port}',
             'JAX_NUM_PROCESSES': str(len(self.homes)), 'JAX_PROCESS_ID': str(i)}
      workers.append({'pid': _only_child(init.pid), 'home': home, 'env': env})
    with open(self.description, 'w') as f:
      json.dump({'name': POD, 'zone': ZONE, 'calls': self.calls_file, 'workers': workers}, f)

  @staticmethod
  def _make_python(folder: str) -> None:
    """A worker's own environment (what pip installs into) that sees the test's packages."""
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', folder], check=True)
    purelib = subprocess.run([f'{folder}/bin/python', '-c',
                              'import sysconfig; print(sysconfig.get_path("purelib"))'],
                             check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(purelib, '_test_environment.pth'), 'w') as f:
      f.write(''.join(f'import site; site.addsitedir({path!r})\n'
                      for path in site.getsitepackages()))

  def stop(self) -> None:
    for init in self.inits:  # its namespace's processes die with it
      init.kill()
      init.wait()

  def calls(self) -> list[list[str]]:
    with open(self.calls_file) as f:
      return [json.loads(line) for line in f]

  def log(self, worker: int) -> str:
    return launch_testlib.read_text(os.path.join(self.homes[worker], 'cvrl_jax', 'train.log'))


def _only_child(pid: int) -> int:
  with open(f'/proc/{pid}/task/{pid}/children') as f:
    (child,) = f.read().split()
  return int(child)


def _why_no_pod() -> str | None:
  for program in ('unshare', 'nsenter', 'pgrep', 'pkill'):
    if shutil.which(program) is None:
      return f'the TPU pod test needs {program} (util-linux / procps)'
  return None


@pytest.fixture
def pod(env, tmp_path):
  reason = _why_no_pod()
  if reason:
    pytest.skip(reason)
  worker_env = {k: v for k, v in lib.subprocess_env(
      env.cache, num_devices=launch_testlib.DEVICES_PER_PROCESS).items() if k.startswith(
          ('JAX_', 'XLA_', 'TF_CPP', 'PYTHONUNBUFFERED', 'CUDA_VISIBLE'))}
  worker_env.update(LANG='C.UTF-8', USER='root', SHELL='/bin/bash',
                    PIP_NO_INDEX='1', PIP_NO_DEPS='1', PIP_DISABLE_PIP_VERSION_CHECK='1',
                    PIP_NO_BUILD_ISOLATION='0')  # pip's env spelling of --no-build-isolation
  local = LocalPod(str(tmp_path / 'pod'), launch_testlib.NUM_PROCESSES, worker_env)
  try:
    local.start()
  except OSError as e:
    local.stop()
    pytest.skip(f'could not make the stand-in TPU workers (PID/mount namespaces): {e}')
  yield local
  local.stop()


def _script(pod_: LocalPod, *args: str, **popen) -> subprocess.CompletedProcess | subprocess.Popen:
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env.update(PATH=f'{FAKE_GCLOUD}:{os.environ["PATH"]}', FAKE_TPU_POD=pod_.description)
  command = [SCRIPT, args[0], POD, ZONE, *args[1:]]
  if popen:
    return subprocess.Popen(command, env=env, cwd=lib.REPO, text=True, **popen)
  return subprocess.run(command, env=env, cwd=lib.REPO, capture_output=True, text=True,
                        timeout=600)


def test_tpu_pod_script_against_a_recorded_gcloud(pod, env, tmp_path):
  workdir = str(tmp_path / 'run')
  config = f'configs/demo.py:{env.data}'
  run_args = [config, workdir, *lib.override_flags()]
  diagnostics = lambda: '\n'.join(f'--- worker {i} train.log ---\n{pod.log(i)}' for i in range(2))

  setup = _script(pod, 'setup')
  assert setup.returncode == 0, setup.stderr
  for home, python in zip(pod.homes, pod.pythons):
    assert os.path.isfile(os.path.join(home, 'cvrl_jax', 'launch', 'tpu_pod.sh'))
    assert not os.path.exists(os.path.join(home, 'cvrl_jax.tgz'))
    found = subprocess.run(  # the worker's python3 imports the worker's copy (pip install -e)
        [f'{python}/bin/python3', '-c',
         'import importlib.util; print(importlib.util.find_spec("cvrl_jax").origin)'],
        cwd='/', capture_output=True, text=True, env={'PATH': '/usr/bin:/bin'})
    assert found.stdout.strip() == os.path.join(home, 'cvrl_jax', 'cvrl_jax', '__init__.py'), found

  started = _script(pod, 'run', *run_args)
  assert started.returncode == 0 and 'Started on every worker' in started.stdout, started.stderr
  again = _script(pod, 'run', *run_args)  # a second run while one runs is refused
  assert again.returncode != 0
  assert again.stderr.count('cvrl_jax.main is already running; stop it first') == 2, again.stderr

  follow = _script(pod, 'log', stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                   start_new_session=True)
  followed = []
  # Ctrl-C on `log` (after 600 s: a run that never reaches its first step fails the test).
  interrupt = lambda: os.killpg(follow.pid, signal.SIGINT)
  watchdog = threading.Timer(600, interrupt)
  watchdog.start()
  try:
    for line in follow.stdout:  # worker 0's log, as `log` shows it
      followed.append(line)
      if f'step 1/{lib.NUM_STEPS} ' in line:
        break
    stop = _script(pod, 'stop')  # returns once every worker has saved and exited
  finally:
    watchdog.cancel()
    interrupt()
    try:
      follow.wait(timeout=60)
    except subprocess.TimeoutExpired:  # Ctrl-C did not end `log`: fail, never hang the suite
      os.killpg(follow.pid, signal.SIGKILL)
      follow.wait()
      raise AssertionError('`tpu_pod.sh log` ignored Ctrl-C (SIGINT) for 60 s')
  assert f'step 1/{lib.NUM_STEPS} ' in ''.join(followed), diagnostics()
  assert 'process 0 of 2, 4 local / 8 global devices' in ''.join(followed)
  assert stop.returncode == 0, stop.stderr
  ended = lambda runs: all(pod.log(i).count('exited with status') == runs for i in range(2))
  launch_testlib.wait_for(lambda: ended(1), 10, 'the exit status lines', diagnostics)
  logs = [pod.log(i) for i in range(2)]
  step = launch_testlib.stopped_step(''.join(logs))
  for i, log in enumerate(logs):
    assert f'process {i} of 2, 4 local / 8 global devices' in log, log
    assert log.rstrip().endswith('cvrl_jax.main exited with status 0'), log
  launch_testlib.check_stopped_run(workdir, step)

  resumed = _script(pod, 'run', *run_args)
  assert resumed.returncode == 0, resumed.stderr
  launch_testlib.wait_for(lambda: ended(2), 600, 'the resumed run to end', diagnostics)
  for log in (pod.log(i) for i in range(2)):
    assert f'Resumed from {workdir}/checkpoints/{step} at step {step}' in log, log
    assert log.rstrip().endswith('cvrl_jax.main exited with status 0'), log
  launch_testlib.check_resumed_run(workdir, env)

  # What a user's pod received, call by call.
  remote_run = ('if pgrep -f \'{t}\' > /dev/null; then echo "$(hostname): cvrl_jax.main is '
                'already running; stop it first" >&2; exit 1; fi; cd ~/cvrl_jax || exit 1; (nohup '
                'python3 -m cvrl_jax.main {args}; echo "cvrl_jax.main exited with status $?") >> '
                'train.log 2>&1 < /dev/null &').format(t=TRAINER, args=' '.join(
                    [f'--config={config}', f'--workdir={workdir}', *lib.override_flags()]))
  ssh = ['compute', 'tpus', 'tpu-vm', 'ssh', POD, f'--zone={ZONE}']
  calls = pod.calls()
  tarball = calls[0][4]
  assert calls == [
      ['compute', 'tpus', 'tpu-vm', 'scp', tarball, f'{POD}:cvrl_jax.tgz', f'--zone={ZONE}',
       '--worker=all'],
      [*ssh, '--worker=all', "--command=mkdir -p ~/cvrl_jax && tar -C ~/cvrl_jax -xzf "
       "~/cvrl_jax.tgz && rm ~/cvrl_jax.tgz && cd ~/cvrl_jax && python3 -m pip install -q -e "
       "'.[tpu]'"],
      [*ssh, '--worker=all', f'--command={remote_run}'],
      [*ssh, '--worker=all', f'--command={remote_run}'],
      [*ssh, '--worker=0', '--command=tail -n 100 -f ~/cvrl_jax/train.log'],
      [*ssh, '--worker=all', f"--command=pkill -TERM -f '{TRAINER}' || exit 0; while pgrep -f "
       f"'{TRAINER}' > /dev/null; do sleep 1; done"],
      [*ssh, '--worker=all', f'--command={remote_run}'],
  ]
  assert not os.path.exists(tarball)  # the local copy is removed after the upload
