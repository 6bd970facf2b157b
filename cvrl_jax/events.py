"""Scalars from TensorBoard event files: `read_scalars(logdir)` -> {tag: (steps, values)}.

Reads the event files with tf.data (local paths and URLs alike) and parses each record as an
`Event` proto, instead of the deprecated `tf.compat.v1.train.summary_iterator`.
"""
from typing import Dict, Tuple

import numpy as np

from cvrl_jax import paths

EVENT_FILES = 'events.out.tfevents.*'


def read_scalars(logdir: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
  """{tag: (steps, values)} of every scalar in the event files directly in `logdir`, steps
  ascending (clu's SummaryWriter writes scalars as tensors; TF1's simple_value is read too). A
  step written twice (a resumed run) keeps its last value."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.core.util import event_pb2  # pylint: disable=g-import-not-at-top
  points: Dict[str, Dict[int, float]] = {}
  for path in sorted(paths.glob(paths.join(logdir, EVENT_FILES))):
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
      event = event_pb2.Event.FromString(record)
      for value in event.summary.value:
        if value.HasField('simple_value'):
          number = float(value.simple_value)
        elif value.HasField('tensor') and not value.tensor.tensor_shape.dim:
          number = float(tf.make_ndarray(value.tensor))
        else:
          continue
        points.setdefault(value.tag, {})[int(event.step)] = number
  return {tag: (np.array(sorted(p)), np.array([p[s] for s in sorted(p)]))
          for tag, p in points.items()}
