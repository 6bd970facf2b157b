"""Bad records and labels (issue 18.1, 18.2): skipped and counted in pretraining, named in
evaluation, never scored; no TensorFlow graph-node text in the sentences."""
import io
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cvrl_jax import config_lib
from cvrl_jax.data import dmvr
from cvrl_jax.data import pipeline
from cvrl_jax.data import plan as plan_lib
from cvrl_jax.data import records
from train_testlib import env  # pylint: disable=unused-import

HEIGHT, WIDTH = 24, 32
BAD_LABEL = 99
# Record index in the mixed file -> what is wrong with it.
BAD = {2: 'undecodable JPEG', 5: 'no frames', 7: 'frames of two sizes'}
NUM_MIXED, NUM_GOOD_OTHER = 12, 5
CROP = dict(crop_area_range=(0.3, 1.0), crop_aspect_range=(0.5, 2.0))


def _jpeg(value, size=(HEIGHT, WIDTH)) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(np.full(size + (3,), value, np.uint8)).save(buffer, format='JPEG')
  return buffer.getvalue()


def _video(n=8):
  return [_jpeg(10 + 20 * i) for i in range(n)]


def _record(index):
  kind = BAD.get(index)
  if kind is None:
    return dmvr.make_sequence_example(_video(), index)
  if kind == 'undecodable JPEG':
    return dmvr.make_sequence_example([b'\xff\xd8 not a jpeg'] * 8, BAD_LABEL)
  if kind == 'frames of two sizes':  # every other frame is half the size
    frames = [_jpeg(50, (HEIGHT, WIDTH) if i % 2 else (HEIGHT // 2, WIDTH // 2)) for i in range(8)]
    return dmvr.make_sequence_example(frames, BAD_LABEL)
  example = tf.train.SequenceExample()  # 'no frames': a label and an empty frame list
  example.context.feature[dmvr.LABEL_INDEX_KEY].int64_list.value.append(BAD_LABEL)
  example.feature_lists.feature_list[dmvr.IMAGE_KEY]  # pylint: disable=pointless-statement
  return example


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  folder = tmp_path_factory.mktemp('bad_records')
  mixed, other = str(folder / 'mixed.tfrecord'), str(folder / 'other.tfrecord')
  dmvr.write_shard(mixed, [_record(i) for i in range(NUM_MIXED)])
  dmvr.write_shard(other, [dmvr.make_sequence_example(_video(), 20 + i)
                           for i in range(NUM_GOOD_OTHER)])
  return mixed, other


def _cfg(paths, **overrides):
  cfg = config_lib.data_config()
  cfg.train_files = cfg.eval_files = ','.join(paths)
  cfg.num_frames, cfg.frame_stride, cfg.image_size, cfg.shuffle_buffer = 4, 1, 16, 8
  cfg.eval_num_frames, cfg.eval_frame_stride, cfg.eval_image_size = 4, 1, 16
  cfg.eval_resize, cfg.eval_crop_size = HEIGHT, 16
  cfg.eval_num_temporal_views, cfg.eval_num_spatial_views = 2, 1
  for key, value in overrides.items():
    setattr(cfg, key, value)
  return cfg


def _pretrain(cfg, start=(0, 0)):
  return pipeline.make_pretrain_iterator(
      cfg, plan_lib.simple_plan('cvrl_pair', 2, **CROP), global_batch_size=4, seed=0,
      start_position=start, process_index=0, process_count=1)


def _eval(cfg, mode='center_clip', num_epochs=1):
  return pipeline.make_eval_iterator(cfg, split='eval', mode=mode, global_batch_size=4, seed=0,
                                     num_epochs=num_epochs, process_index=0, process_count=1)


def test_pretraining_skips_and_counts_bad_records_and_resumes_past_them(files):
  mixed, other = files
  iterator = _pretrain(_cfg(files, max_bad_fraction=0.5))
  good = NUM_MIXED + NUM_GOOD_OTHER - len(BAD)  # 14 good records an epoch
  batches = [next(iterator) for _ in range(3)]  # 12 examples, all from epoch 0
  labels = np.concatenate([b['label'] for b in batches])
  expected_labels = {i for i in range(NUM_MIXED) if i not in BAD} | {20 + i for i in range(5)}
  assert len(set(labels.tolist())) == 12 and set(labels.tolist()) <= expected_labels
  assert BAD_LABEL not in labels
  assert all(set(b) == {'video', 'label', 'key', 'position'} for b in batches)
  # One more epoch's worth: every bad record was met once in epoch 0, in the log order.
  batches += [next(iterator) for _ in range(2)]
  epoch0 = [(p, i) for p, i in iterator.checks.skipped][:len(BAD)]
  assert sorted(epoch0) == [(mixed, i) for i in sorted(BAD)]
  summary = iterator.checks.summary()
  assert summary['num_skipped_records'] == len(iterator.checks.skipped) >= len(BAD)
  assert sorted(s['record'] for s in summary['skipped_records']) == sorted(BAD)  # each once
  assert {s['file'] for s in summary['skipped_records']} == {mixed}
  assert iterator.checks.read == 20 + len(iterator.checks.skipped)  # 5 batches of 4 + skipped
  labels = np.concatenate([b['label'] for b in batches])
  assert set(labels[:good].tolist()) == expected_labels  # the first 14 examples: all of epoch 0
  # Resuming after batch 2 reads exactly what the uninterrupted stream read next.
  resumed = _pretrain(_cfg(files, max_bad_fraction=0.5), start=tuple(batches[1]['position']))
  for expected in batches[2:]:
    batch = next(resumed)
    for key in expected:
      np.testing.assert_array_equal(batch[key], expected[key], err_msg=key)


@pytest.mark.parametrize('process_index', [0, 1])
def test_records_split_resumes_exactly_after_a_skipped_record(files, process_index):
  """host_split='records' on 2 hosts: a bad record makes a host batch take a record of the next
  global batch; resuming from any batch's position (epoch 0 and 1) continues that host's stream
  exactly."""
  def host_stream(start=(0, 0)):
    cfg = _cfg(files, max_bad_fraction=0.5, host_split='records')
    return pipeline.make_pretrain_iterator(
        cfg, plan_lib.simple_plan('cvrl_pair', 2, **CROP), global_batch_size=4, seed=0,
        start_position=start, process_index=process_index, process_count=2)
  uninterrupted = host_stream()
  batches = [next(uninterrupted) for _ in range(6)]
  assert uninterrupted.checks.skipped  # this host met bad records
  assert {int(b['position'][0]) for b in batches} == {0, 1}
  for k in range(1, 5):
    resumed = host_stream(tuple(batches[k]['position']))
    for expected in batches[k + 1:]:
      batch = next(resumed)
      for key in expected:
        np.testing.assert_array_equal(batch[key], expected[key], err_msg=f'after {k}: {key}')


def test_pretraining_stops_past_max_bad_fraction_naming_the_worst_file(files):
  mixed, _ = files
  # 3 of 12 records are bad; 0.1 of an epoch allows 1.2: the second bad record stops the run.
  # (shuffle_buffer 1: records in file order.)
  iterator = _pretrain(_cfg([mixed], max_bad_fraction=0.1, shuffle_buffer=1))
  with pytest.raises(records.BadRecordsError) as error:
    for _ in range(10):
      next(iterator)
  message = str(error.value)
  assert message.startswith('2 of the ')
  assert f'the worst file is {mixed} (2 bad records, the first is record 2)' in message
  assert '{{' not in message and '[[' not in message and '\n' not in message
  assert iterator.checks.skipped == [(mixed, 2), (mixed, 5)]
  # max_bad_fraction 0 stops at the first.
  with pytest.raises(records.BadRecordsError, match='1 of the .* first is record 2'):
    for _ in range(10):
      next(_pretrain(_cfg([mixed], max_bad_fraction=0.0)))


@pytest.mark.parametrize('mode', ['center_clip', 'test_views', 'train_clip'])
def test_evaluation_names_the_first_bad_record(files, mode):
  mixed, _ = files
  cfg = _cfg([mixed], num_classes=100)
  num_epochs = None if mode == 'train_clip' else 1
  with pytest.raises(ValueError) as error:
    for _ in zip(range(10), _eval(cfg, mode, num_epochs)):
      pass
  message = str(error.value)
  if num_epochs == 1:  # file order
    assert message.startswith(f'Record 2 of {mixed} cannot be decoded into clips')
  else:  # shuffled
    assert re.match(rf'Record [{"".join(map(str, BAD))}] of {re.escape(mixed)} cannot be decoded',
                    message)
  assert 'evaluation does not skip records' in message and '{{' not in message


def test_an_online_monitor_leaves_bad_records_out(files, caplog):
  """Pretraining's kNN monitor reads the training files too: a bad record there is left out of
  its batch (mask False) with one warning, as pretraining skips it, instead of ending the run."""
  mixed, _ = files
  iterator = pipeline.make_eval_iterator(
      _cfg([mixed], num_classes=100), split='eval', mode='center_clip', global_batch_size=4,
      seed=0, num_epochs=1, process_index=0, process_count=1, skip_bad_records=True)
  with caplog.at_level('WARNING'):
    kept = np.concatenate([b['label'][np.asarray(b['mask'], bool)] for b in iterator]).tolist()
  good = [i for i in range(NUM_MIXED) if i not in BAD]
  assert set(good) <= set(kept) <= set(good) | {BAD_LABEL}
  assert {(mixed, 2), (mixed, 5)} <= iterator.checks.left_out
  assert f'leaves out record 2 of {mixed}' in caplog.text


def _labelled_file(folder, labels, name='labels.tfrecord'):
  path = str(folder / name)
  examples = []
  for label in labels:
    example = dmvr.make_sequence_example(_video(4), 0)
    del example.context.feature[dmvr.LABEL_INDEX_KEY]
    if label is not None:
      example.context.feature[dmvr.LABEL_INDEX_KEY].int64_list.value.append(label)
    examples.append(example)
  dmvr.write_shard(path, examples)
  return path


@pytest.mark.parametrize('mode', ['center_clip', 'train_clip'])
def test_labels_outside_num_classes_or_missing_name_file_and_record(tmp_path, mode):
  num_epochs = None if mode == 'train_clip' else 1
  path = _labelled_file(tmp_path, [0, 4, 1, 7, 2])
  cfg = _cfg([path], num_classes=5)
  with pytest.raises(ValueError, match=re.escape(
      f'Record 3 of {path} has label 7, outside [0, 5) of config.data.num_classes = 5')):
    for _ in zip(range(10), _eval(cfg, mode, num_epochs)):
      pass
  missing = _labelled_file(tmp_path, [0, None, 1], name='missing.tfrecord')
  with pytest.raises(ValueError, match=re.escape(
      f'Record 1 of {missing} has no label (no clip/label/index)')):
    for _ in zip(range(10), _eval(_cfg([missing], num_classes=5), mode, num_epochs)):
      pass
  # In range: every label comes through.
  labels = [b['label'][b['mask']] for b in _eval(_cfg([path], num_classes=8))]
  assert sorted(np.concatenate(labels).tolist()) == [0, 1, 2, 4, 7]


def test_num_classes_must_match_labels_txt(tmp_path):
  path = _labelled_file(tmp_path, [0, 1])
  dmvr.write_labels(str(tmp_path), [f'class{i}' for i in range(10)])
  with pytest.raises(ValueError, match=re.escape(
      f'config.data.num_classes is 5 but {tmp_path}/labels.txt names 10 classes; set '
      'data.num_classes=10.')):
    _eval(_cfg([path], num_classes=5))
  assert len(list(_eval(_cfg([path], num_classes=10)))) == 1


def test_tensorflow_messages_lose_their_graph_node_text():
  data = tf.data.Dataset.from_tensors(tf.constant(b'not a jpeg')).map(tf.io.decode_jpeg)
  with pytest.raises(tf.errors.InvalidArgumentError) as error:
    next(iter(data))
  assert '{{' in error.value.message  # what TensorFlow says
  text = records.tf_error_text(error.value)
  assert 'Unknown image file format' in text or 'Invalid JPEG' in text, text
  assert '{{' not in text and '[[' not in text and 'Op:' not in text


def test_a_pretraining_run_skips_logs_and_reports_bad_records(env, tmp_path, caplog):
  """The whole job: two bad records in an extra shard are skipped, logged with file and record,
  and listed in results.json; the run finishes. Resumed from a checkpoint, the run lists each
  skipped record once (the count before the checkpoint is saved with it)."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  import train_testlib as lib  # pylint: disable=g-import-not-at-top
  from cvrl_jax import trainer  # pylint: disable=g-import-not-at-top
  data = str(tmp_path / 'demo')
  shutil.copytree(env.data, data)
  bad_shard = os.path.join(data, 'train-00007-of-00009.tfrecord')
  dmvr.write_shard(bad_shard, [_record(2), _record(5)])
  # 66 records an epoch, 0.05 allows 3; 5 steps of 16 read all of epoch 0.
  config = lib.demo_config(data, num_train_steps=5, **{'checkpoint.every_steps': 2,
                                                       'data.max_bad_fraction': 0.05})
  workdir = str(tmp_path / 'run')
  with caplog.at_level('WARNING'):
    results = trainer.pretrain(config, workdir)
  assert results['finished'] is True and results['step'] == 5
  with open(os.path.join(workdir, 'results.json')) as f:
    written = json.load(f)
  skipped = [(s['file'], s['record']) for s in written['skipped_records']]
  assert sorted(skipped) == [(bad_shard, 0), (bad_shard, 1)]  # each once
  assert written['num_skipped_records'] >= 2  # epoch 1 may have met one again
  for index in (0, 1):
    assert f'Skipped record {index} of {bad_shard}: it cannot be decoded' in caplog.text
  # Resume from step 4 (as if the run had died after it): the same list, each record once.
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '5'))
  os.remove(os.path.join(workdir, 'results.json'))
  resumed = trainer.pretrain(config, workdir)
  assert resumed['step'] == 5
  assert sorted((s['file'], s['record']) for s in resumed['skipped_records']) == sorted(skipped)
  assert resumed['num_skipped_records'] >= 2


def test_a_file_removed_while_it_is_read_is_one_sentence(tmp_path):
  import os  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'gone.tfrecord')
  dmvr.write_shard(path, [dmvr.make_sequence_example(_video(), i) for i in range(4)])
  iterator = _eval(_cfg([path], num_classes=5))
  os.remove(path)  # after the pipeline is built, before it reads
  with pytest.raises(ValueError) as error:
    next(iterator)
  message = str(error.value)
  assert message.startswith(f"Cannot read data pattern '{path}'") and path in message
  assert '{{' not in message and '[[' not in message and '\n' not in message


def test_every_hosts_skips_reach_the_summary_and_each_host_resumes_its_own():
  """The checkpoint holds every host's SkipCounter state (trainer: run_utils.allgather_json);
  results.json's summary covers them all, and a resumed host takes back its own (an older
  checkpoint's single dict is process 0's; a new host count merges the lists into process 0)."""
  host0 = {'read': 10, 'skipped': [['a.tfrecord', 2], ['a.tfrecord', 5]]}
  host1 = {'read': 9, 'skipped': [['b.tfrecord', 1], ['a.tfrecord', 2]]}
  summary = records.skip_summary([host0, host1])
  assert summary['num_skipped_records'] == 4
  assert summary['skipped_records'] == [{'file': 'a.tfrecord', 'record': 2},
                                        {'file': 'a.tfrecord', 'record': 5},
                                        {'file': 'b.tfrecord', 'record': 1}]
  assert records.host_skip_state([host0, host1], 1, 2) == host1
  assert records.host_skip_state(host0, 0, 1) == host0  # before every host's was saved
  merged = records.host_skip_state([host0, host1], 0, 1)
  assert merged['read'] == 19 and len(merged['skipped']) == 4
  assert records.host_skip_state([host0, host1], 1, 4) is None
  assert records.host_skip_state(None, 0, 2) is None
