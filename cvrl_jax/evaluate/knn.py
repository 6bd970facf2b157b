"""Weighted kNN classification and nearest-neighbour retrieval on a memory bank of features.

kNN (Wu et al., 2018, the monitor PySlowFast reports; docs/recipes/rho_family.md "Monitoring"):
the k = 200 training videos most similar (cosine) to a query vote for their class with weight
exp(sim / T). T = 0.07 is that monitor's temperature; the recipe does not fix it.

Retrieval (Xu et al., 2019, the VCOP protocol): the query's top-k most similar training videos are
retrieved; top-k is a hit when any of them has the query's class; k in 1, 5, 10, 20, 50.

Both use the same top-k search, done once per query chunk on the devices: the bank is replicated,
queries are sharded over the mesh, so every device searches the whole bank for its own queries
without communication.
"""
import functools
import io
import json
from typing import Any, Callable, Dict, Iterator, Sequence, Tuple

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from cvrl_jax import models
from cvrl_jax import paths
from cvrl_jax import sharding
from cvrl_jax.evaluate import common
from cvrl_jax.evaluate import features
from cvrl_jax.evaluate import views

PyTree = Any

DEFAULT_K = 200
DEFAULT_TEMPERATURE = 0.07
RETRIEVAL_KS = (1, 5, 10, 20, 50)


def nearest_neighbours(queries: jax.Array, bank: jax.Array, bank_labels: jax.Array, k: int
                       ) -> Tuple[jax.Array, jax.Array]:
  """The k most similar bank rows of every query.

  Args:
    queries: [Q, D] L2-normalised.
    bank: [N, D] L2-normalised, N >= k.
    bank_labels: int [N].
    k: number of neighbours.

  Returns:
    (similarities [Q, k] in decreasing order, labels of those neighbours int32 [Q, k]).
  """
  sims = jnp.dot(queries, bank.T, precision=jax.lax.Precision.HIGHEST)
  top_sims, top_index = jax.lax.top_k(sims, k)
  return top_sims, bank_labels.astype(jnp.int32)[top_index]


def knn_vote(neighbour_sims: jax.Array, neighbour_labels: jax.Array, num_classes: int,
             temperature: float = DEFAULT_TEMPERATURE) -> jax.Array:
  """Class scores [Q, C]: sum over neighbours of exp(sim / T) for the neighbour's class."""
  weights = jnp.exp(neighbour_sims / temperature)
  votes = jax.nn.one_hot(neighbour_labels, num_classes, dtype=jnp.float32) * weights[..., None]
  return jnp.sum(votes, axis=1)


def retrieval_hits(neighbour_labels: jax.Array, query_labels: jax.Array, ks: Sequence[int]
                   ) -> Dict[int, jax.Array]:
  """{k: bool [Q]}: whether any of the k nearest neighbours (ordered) has the query's class.

  A negative label (a record without one) never matches, not even another negative label.
  """
  query_labels = query_labels[:, None].astype(jnp.int32)
  match = (neighbour_labels == query_labels) & (query_labels >= 0)
  hit_within = jnp.cumsum(match, axis=1) > 0  # [Q, n]: a hit among the first j + 1 neighbours
  n = neighbour_labels.shape[1]
  return {k: hit_within[:, min(k, n) - 1] for k in ks}


def _weights_digest(variables: PyTree) -> list[float]:
  """Per leaf sum and sum of squares: tells apart two checkpoints of one run (computed where the
  leaves live, so sharded weights need no gather)."""
  sums = jax.jit(lambda tree: [(jnp.sum(x.astype(jnp.float32)), jnp.sum(jnp.square(
      x.astype(jnp.float32)))) for x in jax.tree_util.tree_leaves(tree)])(variables)
  return [float(v) for pair in sums for v in pair]


@functools.lru_cache(maxsize=None)
def _scorer(mesh: Mesh, search_k: int, k: int, temperature: float, num_classes: int,
            retrieval_ks: Tuple[int, ...]) -> Callable[..., Dict[str, jax.Array]]:
  """The jitted per-chunk search and scoring, one per setting (a monitor reuses its compilation)."""

  def score(bank, bank_labels, queries, query_labels):
    queries = models.l2_normalize(queries.astype(jnp.float32))
    sims, neighbour_labels = nearest_neighbours(queries, bank, bank_labels, search_k)
    out = {f'retrieval/top{rk}': hit for rk, hit in
           retrieval_hits(neighbour_labels, query_labels, retrieval_ks).items()}
    if num_classes:
      kk = min(k, search_k)
      scores = knn_vote(sims[:, :kk], neighbour_labels[:, :kk], num_classes, temperature)
      for topk, correct in views.topk_correct(scores, query_labels, (1, 5)).items():
        out[f'knn/top{topk}'] = correct
    return out

  return jax.jit(score, out_shardings=sharding.replicated(mesh))


class MemoryBank:
  """Training-set features on the devices; scores queries by kNN vote and retrieval.

  Features may come unnormalised (they are L2-normalised here). With `num_classes` > 0 the kNN
  top-1/top-5 are returned too, otherwise only retrieval.
  """

  def __init__(self, features: np.ndarray, labels: np.ndarray, mesh: Mesh, *, num_classes: int,
               k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE,
               retrieval_ks: Sequence[int] = RETRIEVAL_KS, queries_per_device: int = 256):
    features = np.asarray(features, np.float32)
    labels = np.asarray(labels, np.int32)
    if features.ndim != 2 or labels.shape != features.shape[:1]:
      raise ValueError(f'the memory bank needs features [N, D] and labels [N], got '
                       f'{features.shape} and {labels.shape}')
    if len(labels) == 0:
      raise ValueError('the memory bank is empty: the training split gave no features.')
    if k <= 0 or temperature <= 0 or any(rk <= 0 for rk in retrieval_ks):
      raise ValueError(f'kNN needs k > 0, T > 0 and positive retrieval ks, got k={k}, '
                       f'T={temperature}, ks={tuple(retrieval_ks)}')
    self.mesh = mesh
    self.size = len(labels)
    # One search gives the neighbours of both uses; a bank smaller than that is searched whole.
    search_k = min(max((k,) + tuple(retrieval_ks)), self.size)
    self._score = _scorer(mesh, search_k, int(k), float(temperature), int(num_classes),
                          tuple(int(rk) for rk in retrieval_ks))
    self._chunk = queries_per_device * mesh.size
    replicated = sharding.replicated(mesh)
    self._bank = jax.device_put(np.asarray(models.l2_normalize(jnp.asarray(features, jnp.float32))), replicated)
    self._bank_labels = jax.device_put(labels, replicated)

  def _chunks(self, features: np.ndarray, labels: np.ndarray
              ) -> Iterator[Tuple[np.ndarray, np.ndarray, int]]:
    """Fixed-size chunks (one compilation), the last padded; yields (features, labels, valid)."""
    for start in range(0, len(labels), self._chunk):
      f, y = features[start:start + self._chunk], labels[start:start + self._chunk]
      valid = len(y)
      if valid < self._chunk:
        f = np.concatenate([f, np.zeros((self._chunk - valid,) + f.shape[1:], f.dtype)])
        y = np.concatenate([y, np.zeros((self._chunk - valid,), y.dtype)])
      yield f, y, valid

  def evaluate(self, features: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """Accuracy of the queries [Q, D] (labels [Q]): knn/top1, knn/top5, retrieval/top{k}."""
    features = np.asarray(features, np.float32)
    labels = np.asarray(labels, np.int32)
    if features.ndim != 2 or features.shape[1] != self._bank.shape[1]:
      raise ValueError(f'query features must be [Q, {self._bank.shape[1]}] like the bank, got '
                       f'{features.shape}')
    batch = sharding.batch_sharding(self.mesh)
    totals: Dict[str, float] = {}
    for f, y, valid in self._chunks(features, labels):
      out = self._score(self._bank, self._bank_labels, jax.device_put(f, batch),
                        jax.device_put(y, batch))
      for name, correct in out.items():
        totals[name] = totals.get(name, 0.0) + float(np.sum(np.asarray(correct)[:valid]))
    count = max(len(labels), 1)
    return {name: total / count for name, total in sorted(totals.items())}


# ------------------------------------------------------------------------------------------------
# Evaluator, job and online monitor.
# ------------------------------------------------------------------------------------------------
class KnnEvaluator:
  """kNN classification and retrieval of the eval split against the train split.

  big_vision's evaluator shape: built once, `run(...)` yields (name, value) pairs. Each video's
  feature is the mean over the clips of `mode` ('test_views': 10 temporal x the configured spatial
  views, as the VCOP protocol averages 10 clips; 'center_clip': one clip, cheap for monitoring).
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh, backbone: nn.Module, *,
               mode: str, max_examples: int = 0, cache_dir: str = '',
               skip_bad_records: bool = False):
    if config.data.num_classes <= 0:
      raise ValueError('kNN evaluation needs config.data.num_classes > 0.')
    self.config = config
    self.mesh = mesh
    self.mode = mode
    self.max_examples = max_examples
    self.cache_dir = cache_dir
    self.skip_bad_records = skip_bad_records
    self._inference = features.feature_inference(
        backbone, mesh, config.eval.get('knn_feature', 'pooled'))

  def _features(self, variables: PyTree, split: str) -> Dict[str, np.ndarray]:
    """A split's features; with cache_dir, a finished pass is kept there and read back by a
    resumed job (a stop repeats only the pass it interrupted)."""
    cache = paths.join(self.cache_dir, f'{split}_features_{self.mode}.npz') if self.cache_dir else ''
    # This job's config and weights: the same init_checkpoint path may hold newer weights later.
    made_by = json.dumps({'config': self.config.to_dict(), 'weights': _weights_digest(variables)},
                         sort_keys=True, default=str)
    if cache and _on_every_process(paths.exists(cache)):
      with np.load(io.BytesIO(paths.read_bytes(cache))) as stored:
        if str(stored['config']) == made_by:
          logging.info('%s features (%s): read from %s (a finished pass).', split, self.mode,
                       cache)
          return {key: stored[key] for key in stored.files if key != 'config'}
      logging.info('%s was written by another config; computing the features again.', cache)
    batches = features.eval_batches(self.config, self.mesh, split=split, mode=self.mode,
                                    skip_bad_records=self.skip_bad_records)
    out = self._inference.run(
        variables, batches, name=f'{split} features ({self.mode})',
        max_batches=features.max_batches_for(self.max_examples, self.config.eval.batch_size))
    if cache and jax.process_index() == 0:
      buffer = io.BytesIO()
      np.savez(buffer, config=np.asarray(made_by), **out)
      paths.write_bytes(cache, buffer.getvalue())
    return out

  def run(self, variables: PyTree) -> Iterator[Tuple[str, float]]:
    train = self._features(variables, 'train')
    test = self._features(variables, 'eval')
    cfg = self.config.eval
    bank = MemoryBank(train['features'], train['label'], self.mesh,
                      num_classes=self.config.data.num_classes, k=cfg.knn_k,
                      temperature=cfg.knn_temperature, retrieval_ks=tuple(cfg.retrieval_ks))
    yield from bank.evaluate(test['features'], test['label']).items()
    yield 'knn/num_train_videos', float(len(train['label']))
    yield 'knn/num_test_videos', float(len(test['label']))


def _on_every_process(flag: bool) -> bool:
  """True when `flag` holds on every process (a collective with several)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.all(multihost_utils.process_allgather(np.asarray(flag))))


def knn_eval(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  """The `knn_eval` job: kNN top-1/top-5 and retrieval top-k of config.init_checkpoint's encoder.

  The features of each split are kept in the workdir once computed, so a stopped job repeats only
  the pass it was in (the train split's, the long one, is not redone after it finished)."""
  mesh = common.start_job(config, workdir)
  backbone, variables, _ = common.load_encoder(config, mesh)
  evaluator = KnnEvaluator(config, mesh, backbone, mode=config.eval.knn_mode, cache_dir=workdir)
  results = dict(evaluator.run(variables))
  common.log_results(config.job, results)
  common.write_results(workdir, results)
  return results


def make_online_monitor(config: ml_collections.ConfigDict, mesh: Mesh, objective: Any,
                        workdir: str) -> Callable[[int, Any], Dict[str, float]]:
  """The pretraining monitor: kNN of the current encoder on centre clips, every
  config.knn_every_steps steps (cvrl_jax.trainer.MONITORS). At most config.eval.monitor_max_examples
  videos of each split (0 = all of them)."""
  del objective, workdir
  if not config.data.eval_files and not config.data.tfds_name:
    raise ValueError('config.knn_every_steps > 0 needs config.data.eval_files (the kNN queries).')
  evaluator = KnnEvaluator(config, mesh, models.build_backbone(config.model), mode='center_clip',
                           max_examples=config.eval.monitor_max_examples, skip_bad_records=True)

  def monitor(step: int, state: Any) -> Dict[str, float]:
    del step
    variables = {'params': state.params['backbone'],
                 'batch_stats': state.batch_stats.get('backbone', {})}
    # 'knn/top1' -> 'monitor/knn_top1': one TensorBoard group next to the training metrics.
    return {f'monitor/{name.replace("/", "_")}': value for name, value in evaluator.run(variables)
            if not name.endswith('_videos')}

  return monitor
