"""Batched inference over a whole split: jit over the mesh, the batch sharded, padding dropped.

The evaluation pipelines (cvrl_jax.data.pipeline.make_eval_iterator with num_epochs=1) yield
every example of a split exactly once across hosts, padding the last global batch with rows whose
'mask' is False. `run_inference` turns each host batch into one global array, runs a jitted
function on it, gathers the (small) per-example outputs to every host and keeps the real rows.
"""
import collections
import functools
import math
import time
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

from absl import logging
import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from cvrl_jax import augment
from cvrl_jax import sharding
from cvrl_jax.data import pipeline

PyTree = Any
Batch = Mapping[str, np.ndarray]
PER_EXAMPLE_KEYS = ('video', 'audio', 'label', 'key', 'mask')
EVAL_MODES = ('train_clip', 'test_views', 'center_clip')
MODALITIES = ('visual', 'audio')  # config.eval.modality


def modality(config: ml_collections.ConfigDict) -> str:
  """config.eval.modality, checked ('visual' for configs from before it existed)."""
  value = config.eval.get('modality', 'visual')
  if value not in MODALITIES:
    raise ValueError(f'config.eval.modality must be one of {MODALITIES}, got {value!r}.')
  return value


def sound_windows(config: ml_collections.ConfigDict) -> Optional[pipeline.SoundWindows]:
  """The audio evaluation's input windows (config.eval.audio), or None for a visual one."""
  if modality(config) != 'audio':
    return None
  a = config.eval.audio
  for key in ('window_samples', 'num_windows', 'sample_rate'):
    if isinstance(a[key], bool) or not isinstance(a[key], int) or a[key] < 1:
      raise ValueError(f'config.eval.audio.{key} must be a positive whole number, got '
                       f'{a[key]!r}.')
  if a.window_samples <= a.n_fft // 2:
    raise ValueError(f'config.eval.audio.window_samples={a.window_samples} is too short for '
                     f'n_fft={a.n_fft} (needs more than n_fft / 2).')
  return pipeline.SoundWindows(sample_rate=a.sample_rate, num_samples=a.window_samples,
                               num_windows=a.num_windows)


def model_input(batch: Mapping[str, Any]):
  """The encoder's input of a batch: 'audio' waveforms [B, V, A] or the 'video' clips."""
  return batch['audio'] if 'audio' in batch else batch['video']


# 'pooled': the backbone's global-average-pooled features (CVRL's); 'conv5_maxpool': the last
# stage's output max-pooled over (1, 2, 2) windows and flattened (VCOP's retrieval feature).
FEATURES = ('pooled', 'conv5_maxpool')


def backbone_features(backbone: nn.Module, variables: PyTree, video: jax.Array,
                      feature: str = 'pooled') -> jax.Array:
  """uint8 video [B, V, T, H, W, 3] (or, for an audio encoder, waveforms float32 [B, V, A]) ->
  float32 features [B, V, D], BN in inference mode."""
  if feature not in FEATURES:
    raise ValueError(f'config.eval.knn_feature must be one of {FEATURES}, got {feature!r}')
  b, v = video.shape[:2]
  clips = augment.to_float(video.reshape((b * v,) + video.shape[2:]))
  if feature == 'pooled':
    features = backbone.apply(variables, clips, train=False)
  else:
    _, stages = backbone.apply(variables, clips, train=False, return_stages=True)
    pooled = nn.max_pool(stages['stage4'].astype(np.float32), (1, 2, 2), strides=(1, 2, 2),
                         padding='VALID')
    features = pooled.reshape(b * v, -1)
  return features.reshape(b, v, -1).astype(np.float32)


class Inference:
  """A jitted `predict(variables, global_batch) -> {name: [B, ...]}` run over whole splits.

  Built once and reused (an online monitor calls it many times: one compilation). `run` returns
  the outputs' rows of real examples (mask True) concatenated over batches, plus 'label'. The
  next batch is dispatched before the previous one's outputs are fetched, so the host's input
  work overlaps the devices' compute.
  """

  def __init__(self, predict: Callable[[PyTree, Dict[str, jax.Array]], Dict[str, jax.Array]],
               mesh: Mesh, keys: Iterable[str] = PER_EXAMPLE_KEYS):
    self.mesh = mesh
    self.keys = tuple(keys)  # the batch fields sent to the devices

    def with_labels(variables, batch):
      out = dict(predict(variables, batch))
      out.update(label=batch['label'], mask=batch['mask'])
      return out

    # Outputs are small per example: replicate them so every host reads all of them.
    self._jitted = jax.jit(with_labels, out_shardings=sharding.replicated(mesh))

  def run(self, variables: PyTree, batches: Iterable[Batch], *, name: str = 'inference',
          max_batches: int = 0, log_every_seconds: float = 30.0) -> Dict[str, np.ndarray]:
    outputs = collections.defaultdict(list)
    start = last_log = time.time()
    count = 0

    def collect(out):
      nonlocal count
      out = jax.device_get(out)
      keep = np.asarray(out.pop('mask'), bool)
      for key, value in out.items():
        outputs[key].append(np.asarray(value)[keep])
      count += int(keep.sum())

    pending = None
    for index, host_batch in enumerate(batches):
      if max_batches and index >= max_batches:
        break
      batch = sharding.host_to_global(
          {k: host_batch[k] for k in self.keys if k in host_batch}, self.mesh)
      out = self._jitted(variables, batch)
      if pending is not None:
        collect(pending)
      pending = out
      if time.time() - last_log > log_every_seconds:
        last_log = time.time()
        logging.info('%s: %d videos done (%.1f videos/s)', name, count, count / (last_log - start))
    if pending is not None:
      collect(pending)
    if not outputs:
      raise ValueError(f'{name}: the input gave no batches (is the split empty?).')
    logging.info('%s: %d videos in %.1f s', name, count, time.time() - start)
    return {key: np.concatenate(parts) for key, parts in outputs.items()}


def eval_batches(config: ml_collections.ConfigDict, mesh: Mesh, *, split: str, mode: str,
                 batch_size: Optional[int] = None,
                 skip_bad_records: bool = False) -> Iterable[Batch]:
  """One pass over a split (each video once across hosts) in one of the evaluation modes
  (skip_bad_records: an online monitor's, which leaves undecodable records out)."""
  if mode not in EVAL_MODES:
    raise ValueError(f'evaluation clip mode must be one of {EVAL_MODES}, got {mode!r}.')
  batch_size = batch_size or config.eval.batch_size
  sharding.check_batch_size(batch_size, mesh, 'config.eval.batch_size')
  return pipeline.make_eval_iterator(config.data, split=split, mode=mode,
                                     global_batch_size=batch_size, seed=config.seed, num_epochs=1,
                                     skip_bad_records=skip_bad_records,
                                     sound=sound_windows(config))


def max_batches_for(max_examples: int, batch_size: int) -> int:
  """Batches that cover `max_examples` videos (0 = no limit)."""
  return math.ceil(max_examples / batch_size) if max_examples else 0


@functools.lru_cache(maxsize=None)
def feature_inference(backbone: nn.Module, mesh: Mesh, feature: str = 'pooled') -> Inference:
  """Inference giving {'features': float32 [B, C]}, the backbone's features averaged over views.

  One per (architecture, mesh) in a process, so jobs run one after another (the demo, a kNN
  monitor) reuse its compilations: Flax modules compare and hash by their attributes."""
  def predict(variables, batch):
    return {'features': backbone_features(backbone, variables, model_input(batch),
                                          feature).mean(axis=1)}
  return Inference(predict, mesh)
