"""Momentum-encoder schedule/update and the MoCo queue on 8 fake devices."""
import collections
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from cvrl_jax.objectives import momentum
from cvrl_jax.objectives import queue as queue_lib


def test_cosine_momentum_matches_formula():
  total, m0 = 1000, 0.994
  for step in (0, 1, 250, 500, 999, 1000, 1500):
    expected = 1 - (1 - m0) * (math.cos(math.pi * min(step, total) / total) + 1) / 2
    np.testing.assert_allclose(float(momentum.cosine_momentum(step, total, m0)), expected,
                               rtol=0, atol=1e-7)
  assert float(momentum.cosine_momentum(0, total, m0)) == pytest.approx(m0)
  assert float(momentum.cosine_momentum(total, total, m0)) == 1.0
  # Works on traced steps (inside the jitted train step).
  jitted = jax.jit(lambda s: momentum.cosine_momentum(s, total, m0))(jnp.int32(500))
  np.testing.assert_allclose(float(jitted), 1 - (1 - m0) / 2, atol=1e-7)
  with pytest.raises(ValueError, match='total_steps'):
    momentum.cosine_momentum(0, 0, m0)


def test_ema_update_matches_formula():
  rng = np.random.default_rng(0)
  target = {'a': rng.normal(size=(3, 2)).astype(np.float32), 'b': {'c': np.float32(2.0)}}
  online = {'a': rng.normal(size=(3, 2)).astype(np.float32), 'b': {'c': np.float32(-1.0)}}
  m = 0.9
  out = momentum.ema_update(target, online, jnp.float32(m))
  np.testing.assert_allclose(out['a'], m * target['a'] + (1 - m) * online['a'], rtol=1e-6)
  np.testing.assert_allclose(out['b']['c'], m * 2.0 + (1 - m) * -1.0, rtol=1e-6)
  # m = 1 keeps the target; m = 0 copies the online network.
  np.testing.assert_array_equal(momentum.ema_update(target, online, 1.0)['a'], target['a'])
  np.testing.assert_array_equal(momentum.ema_update(target, online, 0.0)['a'], online['a'])
  copied = momentum.copy_tree(online)
  np.testing.assert_array_equal(copied['a'], online['a'])


def _enqueue_hlo(fn, queue, ptr, keys):
  return fn.lower(queue, ptr, keys).compile().as_text()


def test_queue_fifo_on_eight_devices_with_wrap_around():
  assert jax.device_count() == 8
  mesh = jax.make_mesh((8,), ('data',), axis_types=(AxisType.Auto,))
  rows = NamedSharding(mesh, P('data'))
  size, dim, n = 64, 4, 24  # 24 does not divide 64: writes straddle the end of the queue
  state = queue_lib.init_queue(jax.random.key(0), size, dim)
  np.testing.assert_allclose(np.linalg.norm(state['queue'], axis=1), 1.0, rtol=1e-5)
  queue = jax.device_put(state['queue'], rows)
  ptr = jax.device_put(state['queue_ptr'], NamedSharding(mesh, P()))
  enqueue = jax.jit(queue_lib.enqueue, out_shardings=(rows, NamedSharding(mesh, P())))

  # Reference FIFO: the last `size` rows ever written, oldest first (initial rows count as written).
  fifo = collections.deque(np.asarray(state['queue']), maxlen=size)
  rng = np.random.default_rng(1)
  for step in range(7):
    keys = rng.normal(size=(n, dim)).astype(np.float32)
    queue, ptr = enqueue(queue, ptr, jax.device_put(keys, rows))
    fifo.extend(keys)
    assert int(ptr) == (step + 1) * n % size
    assert queue.sharding.is_equivalent_to(rows, 2)
    # Rolling by the pointer puts the oldest entry first.
    np.testing.assert_array_equal(np.roll(np.asarray(queue), -int(ptr), axis=0), np.stack(fifo))

  # The write stays on the shards: only the new keys are gathered, never the [64, 4] queue.
  hlo = _enqueue_hlo(enqueue, queue, ptr, jax.device_put(keys, rows))
  gathered = re.findall(r'= f32\[(\d+),\d+\]\S* all-gather\(', hlo)
  assert gathered and all(int(r) == n for r in gathered), gathered


def test_enqueue_errors():
  state = queue_lib.init_queue(jax.random.key(0), 8, 3)
  with pytest.raises(ValueError, match='at least'):
    queue_lib.enqueue(state['queue'], state['queue_ptr'], jnp.zeros((9, 3)))
  with pytest.raises(ValueError, match=r'\[n, 3\]'):
    queue_lib.enqueue(state['queue'], state['queue_ptr'], jnp.zeros((2, 4)))
