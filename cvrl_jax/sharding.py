"""Device mesh, parameter/batch shardings, and host batches -> global arrays.

The mesh has two axes, ('data', 'fsdp'). The batch is split over both (every device holds
batch_size / num_devices examples); parameters are replicated, or with fsdp > 1 their largest
dimension that divides is split over 'fsdp' (ZeRO-3 style: XLA gathers them for the forward pass).
"""
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

PyTree = Any
AXES = ('data', 'fsdp')
BATCH_AXES = AXES  # the leading (example) dimension is split over every device


def mesh_shape(mesh_cfg: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int]:
  """Resolves -1 in (mesh.data, mesh.fsdp) and checks the product is the device count."""
  data, fsdp = int(mesh_cfg.data), int(mesh_cfg.fsdp)
  if fsdp == -1 and data == -1:
    raise ValueError('config.mesh.data and config.mesh.fsdp cannot both be -1.')
  if (fsdp < 1 and fsdp != -1) or (data < 1 and data != -1):
    raise ValueError(f'config.mesh sizes must be positive or -1, got data={data}, fsdp={fsdp}.')
  if data == -1 or fsdp == -1:
    known = fsdp if data == -1 else data
    if num_devices % known:
      raise ValueError(f'config.mesh ({data}, {fsdp}) does not divide the {num_devices} devices.')
    data, fsdp = (num_devices // known, fsdp) if data == -1 else (data, num_devices // known)
  if data * fsdp != num_devices:
    raise ValueError(f'config.mesh data={data} x fsdp={fsdp} = {data * fsdp} devices, but there are '
                     f'{num_devices} devices.')
  return data, fsdp


def make_mesh(mesh_cfg: ml_collections.ConfigDict) -> Mesh:
  """A ('data', 'fsdp') mesh over all devices of all processes, laid out for the topology."""
  shape = mesh_shape(mesh_cfg, jax.device_count())
  # Auto axes: XLA propagates shardings through the Flax model (GSPMD), as jit always did.
  return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES))


def check_batch_size(batch_size: int, mesh: Mesh, name: str = 'config.batch_size') -> int:
  """Raises unless the global batch splits evenly over devices and processes; returns per host."""
  if batch_size <= 0 or batch_size % mesh.size:
    raise ValueError(f'{name}={batch_size} must be a positive multiple of the {mesh.size} devices.')
  if batch_size % jax.process_count():
    raise ValueError(f'{name}={batch_size} must be a multiple of the {jax.process_count()} processes.')
  return batch_size // jax.process_count()


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int) -> P:
  """Splits the largest dimension divisible by fsdp_size for arrays of at least min_size elements."""
  if fsdp_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[dim] = 'fsdp'
      return P(*spec)
  return P()


def state_shardings(abstract_state: PyTree, mesh: Mesh, fsdp_min_size: int) -> PyTree:
  """NamedShardings for a pytree of jax.ShapeDtypeStruct (parameters, optimiser state, ...)."""
  fsdp = mesh.shape['fsdp']
  return jax.tree.map(
      lambda x: NamedSharding(mesh, fsdp_spec(tuple(x.shape), fsdp, fsdp_min_size)), abstract_state)


def host_to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This host's rows of each per-example array -> one global array sharded over all devices.

  Host h contributes rows [h * B_host, (h + 1) * B_host) of the global batch, in the process order
  that make_array_from_process_local_data and the data pipeline's host split agree on.
  """
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def wait_for_all_processes(name: str, timeout_s: int = 3600) -> None:
  """A barrier through the jax.distributed coordination service (no device collective, so a
  host that is still compiling cannot time out CPU collectives); a no-op for one process."""
  if jax.process_count() > 1:
    ocp.multihost.get_barrier_sync_fn()(key=name, timeout_ms=timeout_s * 1000)
