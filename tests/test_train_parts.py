"""The trainer's small libraries on 8 fake devices: mesh and shardings, host batches -> global
arrays, data positions in checkpoints, the SIGTERM watcher and the progress line."""
import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from cvrl_jax import checkpoint
from cvrl_jax import sharding
from cvrl_jax import run_utils


def _mesh_cfg(data, fsdp):
  return ml_collections.ConfigDict({'data': data, 'fsdp': fsdp, 'fsdp_min_size': 0})


@pytest.mark.parametrize('data, fsdp, expected', [
    (-1, 1, (8, 1)), (-1, 2, (4, 2)), (2, -1, (2, 4)), (8, 1, (8, 1)), (1, 8, (1, 8))])
def test_mesh_shape_fills_the_free_axis(data, fsdp, expected):
  assert sharding.mesh_shape(_mesh_cfg(data, fsdp), 8) == expected


@pytest.mark.parametrize('data, fsdp, message', [
    (3, 1, 'data=3 x fsdp=1 = 3 devices, but there are 8 devices'),
    (-1, 3, r'config.mesh \(-1, 3\) does not divide the 8 devices'),
    (-1, -1, 'cannot both be -1'),
    (0, 1, 'must be positive or -1')])
def test_bad_mesh_shapes(data, fsdp, message):
  with pytest.raises(ValueError, match=message):
    sharding.mesh_shape(_mesh_cfg(data, fsdp), 8)


def test_fsdp_spec_splits_the_largest_divisible_dimension():
  assert sharding.fsdp_spec((3, 3, 3, 64, 128), 4, 0) == P(None, None, None, None, 'fsdp')
  assert sharding.fsdp_spec((512, 6), 4, 0) == P('fsdp', None)
  assert sharding.fsdp_spec((6, 5), 4, 0) == P()  # nothing divides
  assert sharding.fsdp_spec((64, 128), 4, 64 * 128 + 1) == P()  # below the minimum size
  assert sharding.fsdp_spec((64, 128), 1, 0) == P()  # no fsdp axis


def test_parameters_created_sharded_over_fsdp():
  mesh = sharding.make_mesh(_mesh_cfg(-1, 4))
  init = lambda: {'kernel': jnp.arange(16 * 6, dtype=jnp.float32).reshape(16, 6),
                  'bias': jnp.ones(6)}
  shardings = sharding.state_shardings(jax.eval_shape(init), mesh, fsdp_min_size=32)
  params = jax.jit(init, out_shardings=shardings)()
  assert params['kernel'].sharding.spec == P('fsdp', None)
  assert {s.data.shape for s in params['kernel'].addressable_shards} == {(4, 6)}
  assert params['bias'].sharding.spec == P()  # small: replicated
  np.testing.assert_array_equal(params['kernel'], np.arange(96).reshape(16, 6))


def test_host_batch_becomes_one_global_array_split_over_every_device():
  mesh = sharding.make_mesh(_mesh_cfg(-1, 2))
  video = np.arange(16 * 3, dtype=np.uint8).reshape(16, 3)
  key = np.stack([np.arange(16), np.arange(16) * 7], 1).astype(np.uint32)
  batch = sharding.host_to_global({'video': video, 'key': key}, mesh)
  assert batch['video'].sharding.spec == P(('data', 'fsdp'))
  assert {s.data.shape for s in batch['video'].addressable_shards} == {(2, 3)}
  np.testing.assert_array_equal(batch['video'], video)
  np.testing.assert_array_equal(batch['key'], key)


def test_batch_size_checks():
  mesh = sharding.make_mesh(_mesh_cfg(-1, 1))
  assert sharding.check_batch_size(64, mesh) == 64  # one process holds the whole batch
  with pytest.raises(ValueError, match='config.batch_size=20 must be a positive multiple of the 8'):
    sharding.check_batch_size(20, mesh)


@pytest.mark.parametrize('rows, split, process, count, expected', [
    ([[2, 10], [2, 12]], 'files', 1, 2, (2, 12)),  # same process count: its own row
    ([[3, 64]], 'records', 1, 4, (3, 64)),  # 'records': one global position for any count
    ([[2, 10], [1, 90]], 'files', 0, 4, (1, 0)),  # new host count: earliest epoch, from its start
])
def test_data_position_for_each_process(rows, split, process, count, expected):
  record = {'positions': rows, 'host_split': split}
  assert checkpoint.position_for_process(record, process, count, split) == expected


def test_checkpoint_keeps_the_last_n_and_restores_state_and_position(tmp_path):
  mesh = sharding.make_mesh(_mesh_cfg(-1, 1))
  ckpt = checkpoint.Checkpointer(str(tmp_path), every_steps=2, keep=2, async_save=True)
  state = {'w': jax.device_put(jnp.zeros((4, 2)), sharding.replicated(mesh)), 'step': jnp.int32(0)}
  for step in (2, 4, 6):
    state = {'w': state['w'] + 1.0, 'step': jnp.int32(step)}
    ckpt.save(step, state, (1, 10 * step), 'files')
  ckpt.wait()
  assert list(ckpt.all_steps()) == [4, 6]
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          state)
  restored = ckpt.restore_state(4, abstract)
  np.testing.assert_array_equal(restored['w'], np.full((4, 2), 2.0))
  assert restored['w'].sharding == state['w'].sharding
  assert ckpt.restore_data(4) == {'positions': [[1, 40]], 'host_split': 'files'}
  ckpt.close()
  assert list(map(ckpt.is_periodic, (1, 2, 3, 4))) == [False, True, False, True]


def test_sigterm_sets_the_preemption_flag_and_is_restored_after():
  before = signal.getsignal(signal.SIGTERM)
  watcher = run_utils.PreemptionWatcher()
  assert not watcher.reached(1)
  os.kill(os.getpid(), signal.SIGTERM)
  assert watcher.reached(2)
  watcher.close()
  assert signal.getsignal(signal.SIGTERM) is before


def test_progress_line():
  line = run_utils.progress_line(100, 1100, {'loss': 4.25, 'contrastive_accuracy': 0.5},
                               steps_per_sec=2.0, clips_per_step=2048)
  assert line == ('step 100/1100 (9.1%) | loss 4.25 | contrastive_accuracy 0.5 | 2.00 steps/s | '
                  '4096.0 clips/s | ETA 0:08:20')


# The train step built, compiled and run in a process where TensorFlow and clu cannot be imported
# (an accelerator image without them, bench/accelerator.py); prints the loss, then what running a
# sampler says there.
_WITHOUT_TENSORFLOW = r'''
import sys

class _Blocked:
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('tensorflow', 'clu'):
      raise ImportError(f'{name} is blocked in this test')

sys.meta_path.insert(0, _Blocked())
sys.path.insert(0, sys.argv[1])
import train_testlib_no_tf as case
from cvrl_jax.data import sampling
loss = case.one_step_loss()
assert 'tensorflow' not in sys.modules
try:
  sampling.SAMPLERS['cvrl_pair'].starts([0, 0], 30, 2, 4, 1, {'power': 1.0})
except ImportError as e:
  print('SAMPLER', e)
print('LOSS', repr(loss))
'''

_CASE = r'''
import jax
import numpy as np
from cvrl_jax import config_lib, sharding, train_step
from cvrl_jax.objectives import build_objective


def one_step_loss():
  config = config_lib.load_config_file('cvrl_r3d50_k400')
  config.batch_size, config.data.num_frames, config.data.image_size = 8, 2, 16
  config.model.depth, config.model.width_multiplier = 10, 0.125
  config.model.conv_impl = 'conv3d'
  mesh = sharding.make_mesh(config.mesh)
  parts = train_step.build_train_step(config, mesh, build_objective(config), 10, 1.0)
  state = parts.create_state()
  rng = np.random.default_rng(0)
  batch = {}
  for name, spec in parts.batch_spec.items():
    value = (rng.integers(0, 256, spec.shape) if name == 'video'
             else np.arange(np.prod(spec.shape)).reshape(spec.shape))
    batch[name] = jax.device_put(value.astype(spec.dtype), spec.sharding)
  _, metrics = parts.compile(state)(state, batch)
  return float(metrics['loss'])
'''


def test_train_step_needs_no_tensorflow(tmp_path):
  """cvrl_jax.train_step builds, compiles and runs the step with TensorFlow and clu unimportable,
  to the same loss as in this process (where both are loaded); a sampler there names what is
  missing in one sentence."""
  import subprocess
  import sys
  (tmp_path / 'train_testlib_no_tf.py').write_text(_CASE)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=repo)
  proc = subprocess.run([sys.executable, '-c', _WITHOUT_TENSORFLOW, str(tmp_path)], env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = dict(line.split(' ', 1) for line in proc.stdout.splitlines()
               if line.startswith(('LOSS', 'SAMPLER')))
  assert 'install tensorflow-cpu' in lines['SAMPLER']
  sys.path.insert(0, str(tmp_path))
  try:
    import train_testlib_no_tf  # pylint: disable=g-import-not-at-top
    import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    expected = train_testlib_no_tf.one_step_loss()
  finally:
    sys.path.remove(str(tmp_path))
  assert float(lines['LOSS']) == pytest.approx(expected, rel=1e-6)
