"""DMVR record format: writer/parser round trip, foreign records, atomic shard writes."""
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cvrl_jax.data import dmvr


def _jpeg(value: int, size=(8, 12)) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(np.full(size + (3,), value, np.uint8)).save(buffer, format='JPEG')
  return buffer.getvalue()


def _parse_all(path, **kwargs):
  return list(tf.data.TFRecordDataset(path).map(
      lambda r: dmvr.parse_sequence_example(r, **kwargs)).as_numpy_iterator())


def test_audio_round_trip_in_dmvr_layout(tmp_path):
  samples = np.sin(np.arange(5000) / 7.0).astype(np.float32)
  example = dmvr.make_sequence_example([_jpeg(10)], 0, audio=samples, audio_sample_rate=16_000)
  # DMVR's layout: one feature in the feature list holds the whole track.
  (feature,) = example.feature_lists.feature_list['WAVEFORM/feature/floats'].feature
  assert len(feature.float_list.value) == 5000
  assert example.context.feature['WAVEFORM/sample_rate'].int64_list.value == [16_000]
  path = str(tmp_path / 'audio.tfrecord')
  dmvr.write_shard(path, [example, dmvr.make_sequence_example([_jpeg(10)], 1)])
  with_audio, without = _parse_all(path, audio=True)
  np.testing.assert_array_equal(with_audio['audio'], samples)
  assert with_audio['audio_sample_rate'] == 16_000
  assert without['audio'].shape == (0,) and without['audio_sample_rate'] == 0
  assert 'audio' not in _parse_all(path)[0]
  with pytest.raises(ValueError, match='needs both the samples and audio_sample_rate'):
    dmvr.make_sequence_example([_jpeg(10)], 0, audio=samples)


def test_round_trip_keeps_every_field(tmp_path):
  frames = [_jpeg(v) for v in (10, 80, 200)]
  examples = [
      dmvr.make_sequence_example(frames, [3, 7], label_string='juggling', data_path='/v/a.mp4',
                                 start_timestamp_us=1_000_000, end_timestamp_us=1_300_000),
      dmvr.make_sequence_example(frames[:1], 5),
  ]
  path = str(tmp_path / 'shard.tfrecord')
  assert dmvr.write_shard(path, examples) == 2
  first, second = _parse_all(path)
  assert list(first['frames']) == frames
  assert first['label'] == 3 and first['label'].dtype == np.int32
  assert list(first['labels']) == [3, 7]
  assert first['label_string'] == b'juggling' and first['data_path'] == b'/v/a.mp4'
  assert (first['start_timestamp'], first['end_timestamp']) == (1_000_000, 1_300_000)
  # Optional fields absent: documented defaults.
  assert list(second['frames']) == frames[:1] and second['label'] == 5
  assert second['label_string'] == b'' and second['data_path'] == b''
  assert second['start_timestamp'] == dmvr.NO_TIMESTAMP == second['end_timestamp']
  # The decoded pixels are the encoded ones (JPEG of a flat image is near exact).
  decoded = tf.io.decode_jpeg(first['frames'][1]).numpy()
  assert np.abs(decoded.astype(int) - 80).max() <= 2


def test_record_written_with_raw_tf_train_apis_reads(tmp_path):
  """A record as another tool writes it: only image/encoded and clip/label/index."""
  frames = [_jpeg(v) for v in (30, 60)]
  example = tf.train.SequenceExample(
      context=tf.train.Features(feature={
          'clip/label/index': tf.train.Feature(int64_list=tf.train.Int64List(value=[42]))}),
      feature_lists=tf.train.FeatureLists(feature_list={
          'image/encoded': tf.train.FeatureList(feature=[
              tf.train.Feature(bytes_list=tf.train.BytesList(value=[f])) for f in frames])}))
  path = str(tmp_path / 'foreign.tfrecord')
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(example.SerializeToString())
  (parsed,) = _parse_all(path)
  assert list(parsed['frames']) == frames and parsed['label'] == 42
  (light,) = _parse_all(path, frames_only=True)
  assert set(light) == {'frames', 'label'} and light['label'] == 42


def test_record_without_label_parses_to_no_label(tmp_path):
  example = tf.train.SequenceExample()
  example.feature_lists.feature_list['image/encoded'].feature.add().bytes_list.value.append(
      _jpeg(1))
  path = str(tmp_path / 'unlabelled.tfrecord')
  dmvr.write_shard(path, [example.SerializeToString()])
  (parsed,) = _parse_all(path)
  assert parsed['label'] == dmvr.NO_LABEL and len(parsed['labels']) == 0


def test_write_shard_is_atomic(tmp_path):
  path = str(tmp_path / 'shard.tfrecord')

  def failing_records():
    yield dmvr.make_sequence_example([_jpeg(1)], 0)
    assert os.listdir(tmp_path) == [os.path.basename(dmvr.temporary_path(path))]
    raise RuntimeError('worker died')

  with pytest.raises(RuntimeError, match='worker died'):
    dmvr.write_shard(path, failing_records())
  assert os.listdir(tmp_path) == []  # neither a partial shard nor a temporary file


def test_empty_frame_list_is_rejected():
  with pytest.raises(ValueError, match='at least one frame'):
    dmvr.make_sequence_example([], 0)
