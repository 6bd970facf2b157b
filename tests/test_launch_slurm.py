"""launch/slurm_gpu.sbatch on a real Slurm cluster of one machine, on CPU devices.

The test starts MUNGE, slurmctld and one slurmd from the distribution's packages (Debian:
`apt-get install slurm-wlm munge`; .ci/run installs them), configured and kept in a temporary
folder, and submits the script as a user would, with the GPU lines overridden on the sbatch command
line: 2 tasks x 4 CPU devices. It checks that srun's tasks form one jax.distributed run from the
Slurm environment alone, that `scancel --signal=TERM` (what --signal=TERM@300 does before the time
limit) saves and stops the run, that the script requeues the job, and that the requeued job resumes
and ends with the uninterrupted run's losses. Without root or the packages, or if the daemons do
not start, the test is skipped and says why.
"""
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

import launch_testlib
import train_testlib as lib
from train_testlib import env  # noqa: F401  (a fixture)

SCRIPT = os.path.join(lib.REPO, 'launch', 'slurm_gpu.sbatch')
PROGRAMS = ('munged', 'mungekey', 'slurmctld', 'slurmd', 'sbatch', 'srun', 'scontrol', 'scancel',
            'sinfo')


class ClusterError(RuntimeError):
  pass


class OneMachineSlurm:
  """MUNGE + slurmctld + slurmd on localhost, everything (config, state, logs) in one folder."""

  def __init__(self, folder: str):
    self.folder = folder
    self.conf = os.path.join(folder, 'slurm.conf')
    self.socket = os.path.join(folder, 'munge', 'munge.socket')
    self.env = {k: v for k, v in os.environ.items() if not k.startswith('SLURM_')}
    self.env['SLURM_CONF'] = self.conf
    self._pid_files = {name: os.path.join(folder, f'{name}.pid')
                       for name in ('munged', 'slurmctld', 'slurmd')}

  def command(self, *args: str, check: bool = True) -> str:
    result = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60)
    if check and result.returncode:
      raise ClusterError(f'`{" ".join(args)}` failed: {result.stderr.strip()}')
    return result.stdout

  def start(self) -> None:
    munge = os.path.join(self.folder, 'munge')
    for sub in ('munge', 'state', 'spool', 'log'):
      os.makedirs(os.path.join(self.folder, sub), mode=0o700, exist_ok=True)
    key = os.path.join(munge, 'munge.key')
    self.command('mungekey', '--create', f'--keyfile={key}')
    # --force: munged refuses sockets in folders it does not own end to end (pytest's /tmp/...).
    self.command('munged', '--force', f'--key-file={key}', f'--socket={self.socket}',
                 f'--pid-file={self._pid_files["munged"]}', f'--seed-file={munge}/seed',
                 f'--log-file={self.folder}/log/munged.log')
    with open(self.conf, 'w') as f:
      f.write(self._config())
    self.command('slurmctld', '-f', self.conf, '-i')  # -i: no state from a previous cluster
    self.command('slurmd', '-f', self.conf, '-N', 'localhost')
    launch_testlib.wait_for(self._node_is_idle, 30, 'the Slurm node to come up', self.logs)

  def _node_is_idle(self) -> bool:
    states = self.command('sinfo', '--noheader', '--format=%T', check=False).split()
    if any(s.startswith(('down', 'drain', 'fail')) for s in states):
      raise ClusterError(f'the node is {states}:\n{self.logs()}')
    return states == ['idle']

  def _config(self) -> str:
    ports = [lib.free_port() for _ in range(2)]
    return f"""\
ClusterName=cvrltest
SlurmctldHost=localhost
SlurmUser=root
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket={self.socket},cred_expire=5
StateSaveLocation={self.folder}/state
SlurmdSpoolDir={self.folder}/spool
SlurmctldPidFile={self._pid_files['slurmctld']}
SlurmdPidFile={self._pid_files['slurmd']}
SlurmctldLogFile={self.folder}/log/slurmctld.log
SlurmdLogFile={self.folder}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=sched_interval=1
JobRequeue=1
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# The node declares at least the 2 CPUs the job asks for, whatever this machine has.
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs={max(2, os.cpu_count() or 1)} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""

  def logs(self) -> str:
    parts = []
    for name in ('munged', 'slurmctld', 'slurmd'):
      text = launch_testlib.read_text(os.path.join(self.folder, 'log', f'{name}.log'))
      parts.append(f'--- {name}.log (end) ---\n' + '\n'.join(text.splitlines()[-15:]))
    return '\n'.join(parts)

  def job_state(self, job: str) -> dict[str, str]:
    line = self.command('scontrol', '--oneliner', 'show', 'job', job)
    return dict(re.findall(r'(\w+)=(\S*)', line))

  def stop(self) -> None:
    """Cancels what still runs, shuts the daemons down and waits for them (by their pid files)."""
    if os.path.exists(self.conf):
      self.command('scancel', '--full', f'--user={os.getuid()}', check=False)
      self.command('scontrol', 'shutdown', check=False)
    for name in ('slurmd', 'slurmctld', 'munged'):  # munged last: the others talk through it
      try:
        with open(self._pid_files[name]) as f:
          pid = int(f.read().strip())
      except (FileNotFoundError, ValueError):
        continue
      if name == 'munged':
        _signal(pid, signal.SIGTERM)
      if not _wait_gone(pid, 20):
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
  try:
    os.kill(pid, signum)
  except ProcessLookupError:
    pass


def _wait_gone(pid: int, timeout: float) -> bool:
  try:
    launch_testlib.wait_for(lambda: not os.path.exists(f'/proc/{pid}'), timeout, f'pid {pid}')
    return True
  except pytest.fail.Exception:
    return False


def _why_no_cluster() -> str | None:
  missing = [p for p in PROGRAMS if shutil.which(p, path=os.environ.get('PATH', '') +
                                                 ':/usr/sbin:/sbin') is None]
  if missing:
    return (f'the Slurm test needs the slurm-wlm and munge packages (missing: '
            f'{", ".join(missing)}; on Debian/Ubuntu: apt-get install slurm-wlm munge)')
  if os.geteuid() != 0:
    return 'the Slurm test starts slurmd, which must run as root (this test is not root)'
  return None


@pytest.fixture(scope='module')
def slurm(tmp_path_factory):
  reason = _why_no_cluster()
  if reason:
    pytest.skip(reason)
  cluster = OneMachineSlurm(str(tmp_path_factory.mktemp('slurm')))
  cluster.env['PATH'] = cluster.env.get('PATH', '') + ':/usr/sbin:/sbin'
  try:
    cluster.start()
  except (ClusterError, pytest.fail.Exception) as e:
    cluster.stop()
    pytest.skip(f'the one-machine Slurm cluster did not start: {e}')
  yield cluster
  cluster.stop()


def test_sbatch_script_runs_stops_requeues_and_resumes(slurm, env, tmp_path):
  workdir, log = str(tmp_path / 'run'), str(tmp_path / 'job.log')
  job_env = {**lib.subprocess_env(env.cache, num_devices=launch_testlib.DEVICES_PER_PROCESS),
             'SLURM_CONF': slurm.conf, 'PYTHON': sys.executable, 'PATH': slurm.env['PATH']}
  job_env = {k: v for k, v in job_env.items() if not k.startswith('SLURM_') or k == 'SLURM_CONF'}
  # The script's #SBATCH lines ask for 2 nodes x 8 GPUs; the command line overrides them.
  submit = subprocess.run(
      ['sbatch', '--parsable', '--nodes=1', f'--ntasks-per-node={launch_testlib.NUM_PROCESSES}',
       '--gpus-per-node=0', '--cpus-per-task=1', '--time=30', f'--output={log}', SCRIPT,
       f'{lib.DEMO_CONFIG}:{env.data}', workdir, *lib.override_flags()],
      env=job_env, cwd=lib.REPO, capture_output=True, text=True, timeout=60)
  assert submit.returncode == 0, submit.stderr
  job = submit.stdout.strip().split(';')[0]
  diagnostics = lambda: (f'--- job log ---\n{launch_testlib.read_text(log)}\n'
                         f'--- scontrol show job ---\n{slurm.job_state(job)}\n{slurm.logs()}')

  launch_testlib.wait_for(lambda: f'step 1/{lib.NUM_STEPS} ' in launch_testlib.read_text(log),
                          600, 'the first training step', diagnostics)
  slurm.command('scancel', '--signal=TERM', job)  # to srun's tasks, as --signal=TERM@300 does
  launch_testlib.wait_for(lambda: slurm.job_state(job)['JobState'] in (
      'COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY'), 600,
                          'the requeued job to end', diagnostics)

  state, text = slurm.job_state(job), launch_testlib.read_text(log)
  assert state['JobState'] == 'COMPLETED' and state['Restarts'] == '1', diagnostics()
  # Each of the two runs (before and after the requeue) had both tasks in one jax.distributed run.
  for i in range(launch_testlib.NUM_PROCESSES):
    assert text.count(f'process {i} of 2, 4 local / 8 global devices') == 2, text
  step = launch_testlib.stopped_step(text)
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', str(step)))
  assert f'requeuing job {job} to resume' in text, text
  assert text.count(f'Resumed from {workdir}/checkpoints/{step} at step {step}') == 2, text
  assert f'Finished {lib.NUM_STEPS} steps' in text, text
  launch_testlib.check_resumed_run(workdir, env)
