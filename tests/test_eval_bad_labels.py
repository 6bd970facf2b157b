"""Issue 18.1 end to end: an evaluation job on labels it cannot score stops with one sentence
naming the record (it reported kNN top-1 = 1.0 and exited 0), and writes no results."""
import os
import re

import pytest

from cvrl_jax.data import dmvr
from cvrl_jax.evaluate import knn
from test_data_bad_records import _video
from test_eval_jobs import data, encoder_path, job_config  # pylint: disable=unused-import


def test_num_classes_below_the_demos_ten_stops_knn_eval(data, encoder_path, tmp_path):
  config = job_config(data, 'knn_eval', encoder_path)
  config.data.num_classes = 5
  labels = os.path.join(os.path.dirname(data['train']), dmvr.LABELS_FILE)
  with pytest.raises(ValueError, match=re.escape(
      f'config.data.num_classes is 5 but {labels} names 10 classes')):
    knn.knn_eval(config, str(tmp_path / 'knn'))
  assert not os.path.exists(tmp_path / 'knn' / 'results.json')


def test_a_test_split_with_labels_out_of_range_stops_knn_eval(data, encoder_path, tmp_path):
  bad_test = str(tmp_path / 'test' / 'test-00000-of-00001.tfrecord')
  os.makedirs(os.path.dirname(bad_test))
  dmvr.write_shard(bad_test, [dmvr.make_sequence_example(_video(6), 10 + i) for i in range(3)])
  config = job_config(data, 'knn_eval', encoder_path)
  config.data.eval_files = bad_test
  with pytest.raises(ValueError, match=re.escape(
      f'Record 0 of {bad_test} has label 10, outside [0, 10) of config.data.num_classes = 10')):
    knn.knn_eval(config, str(tmp_path / 'knn'))
  assert not os.path.exists(tmp_path / 'knn' / 'results.json')
