"""config.eval.label_fraction: a class-balanced, seeded subset of the training labels.

CVRL's semi-supervised evaluation (and SimCLR's 1% / 10% ImageNet protocol) trains the classifier
on a fraction of the labelled training videos. Here every class keeps round(fraction x its count)
videos, at least one, chosen by a permutation seeded with config.seed, so the same seed gives the
same subset and a larger fraction's subset does not depend on the smaller's. The encoder, the
test split and the linear probe's feature standardiser (label-free statistics) still see every
video; only the supervised loss is restricted.

Two ways in: `class_balanced_subset` picks indices into an array of labels (the cached-feature
probe subsets its feature bank), and `restrict_train_files` writes the chosen training records to
WORKDIR/label_subset/ and points a copy of the config at them (the probe on augmented clips and
fine-tuning read clips from files). The chosen videos are listed in label_subset.json either way.
"""
import json
import os
from typing import Dict, Optional, Tuple

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from cvrl_jax import run_utils
from cvrl_jax.data import dmvr
from cvrl_jax.data import sources

SUBSET_DIR = 'label_subset'
SUBSET_FILE = 'label_subset.json'


def check_fraction(fraction: float) -> None:
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f'config.eval.label_fraction must be in (0, 1], got {fraction!r}.')


def class_balanced_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
  """Sorted indices into `labels`: per class, round(fraction x count) of its examples (at least
  one), the first of a permutation seeded by (seed, class)."""
  check_fraction(fraction)
  labels = np.asarray(labels)
  chosen = []
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    count = min(len(members), max(1, int(round(fraction * len(members)))))
    rng = np.random.default_rng([int(seed), int(label) & 0x7FFFFFFF])
    chosen.append(rng.permutation(members)[:count])
  return np.sort(np.concatenate(chosen)) if chosen else np.zeros((0,), np.int64)


def write_subset_list(workdir: str, indices: np.ndarray, labels: np.ndarray, fraction: float,
                      seed: int) -> None:
  counts = np.bincount(np.asarray(labels)[indices].astype(np.int64))
  run_utils.write_json(os.path.join(workdir, SUBSET_FILE), {
      'label_fraction': fraction, 'seed': seed, 'num_train_videos': int(len(labels)),
      'num_labelled': int(len(indices)), 'per_class': {str(c): int(n) for c, n in
                                                       enumerate(counts) if n},
      'indices': [int(i) for i in indices]})


def _train_records(data_cfg: ml_collections.ConfigDict) -> Tuple[list, np.ndarray]:
  """Serialized training records and their labels, in the files' sorted order."""
  if not data_cfg.train_files:
    raise ValueError('config.eval.label_fraction < 1 on augmented clips needs DMVR TFRecord '
                     'training files (config.data.train_files); a TFDS source works only with '
                     'the cached-feature probe.')
  records, labels = [], []
  for path in sources.resolve_files(data_cfg.train_files):
    try:
      for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        records.append(record)
        index = tf.train.SequenceExample.FromString(record).context.feature[
            dmvr.LABEL_INDEX_KEY].int64_list.value
        labels.append(int(index[0]) if index else dmvr.NO_LABEL)
    except tf.errors.DataLossError as e:
      raise sources.corrupt_file_error(path, e) from e
  return records, np.asarray(labels, np.int64)


def restrict_train_files(config: ml_collections.ConfigDict, workdir: str
                         ) -> Tuple[ml_collections.ConfigDict, Optional[Dict[str, int]]]:
  """(config, None) at label_fraction 1; otherwise a copy of config whose training files are the
  labelled subset, written to WORKDIR/label_subset/, and {'num_labelled', 'num_train'}."""
  fraction = float(config.eval.label_fraction)
  check_fraction(fraction)
  if fraction == 1.0:
    return config, None
  folder = os.path.join(workdir, SUBSET_DIR)
  shard = dmvr.shard_path(folder, 'train', 0, 1)
  records, labels = _train_records(config.data)
  indices = class_balanced_subset(labels, fraction, config.seed)
  os.makedirs(folder, exist_ok=True)
  dmvr.write_shard(shard, [records[i] for i in indices])  # atomic: whole or not at all
  write_subset_list(workdir, indices, labels, fraction, config.seed)
  logging.info('Label fraction %g: %d of %d training videos labelled (%s).', fraction,
               len(indices), len(labels), shard)
  subset = config.copy_and_resolve_references()
  subset.data.train_files = dmvr.shard_pattern(folder, 'train')
  subset.data.num_train_examples = len(indices)
  subset.data.tfds_name = ''
  return subset, {'num_labelled': int(len(indices)), 'num_train': int(len(labels))}
