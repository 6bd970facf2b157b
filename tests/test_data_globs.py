"""Data globs follow the shell's convention (issue 17.4): `*` never matches a leading dot, and
the converter's own files (labels.txt, summaries, `.NAME.tfrecord.json`, temporary files) are
never taken for shards whatever the pattern. Python's glob module, which follows the shell, is
the independent expectation."""
import glob
import os

import pytest

from cvrl_jax.data import dmvr
from cvrl_jax.data import sources


@pytest.fixture
def folder(tmp_path):
  shard = dmvr.shard_path(str(tmp_path), 'train', 0, 1)
  dmvr.write_shard(shard, [dmvr.make_sequence_example([b'jpeg'], 0)])
  names = ['.train-00000-of-00001.tfrecord.json', '.train-00000-of-00001.tfrecord.tmp-4242',
           '.hidden.tfrecord', dmvr.LABELS_FILE, 'train' + dmvr.SUMMARY_SUFFIX, 'notes.txt']
  for name in names:
    (tmp_path / name).write_text('not a shard')
  os.makedirs(tmp_path / '.cache')
  (tmp_path / '.cache' / 'x.tfrecord').write_text('not a shard')
  os.makedirs(tmp_path / 'sub')
  (tmp_path / 'sub' / 'y.tfrecord').write_text('y')
  return str(tmp_path)


def _converter_file(path):
  name = os.path.basename(path)
  return name in ('.train-00000-of-00001.tfrecord.json', '.train-00000-of-00001.tfrecord.tmp-4242',
                  dmvr.LABELS_FILE, 'train' + dmvr.SUMMARY_SUFFIX)


@pytest.mark.parametrize('pattern', ['*tfrecord*', '*', '*.tfrecord', '.*', '.*tfrecord*',
                                     '*/*.tfrecord', '.cache/*', '?rain-*', '.*.json'])
def test_globs_match_what_the_shell_matches_minus_converter_files(folder, pattern):
  pattern = os.path.join(folder, pattern)
  expected = sorted(p for p in glob.glob(pattern)
                    if not _converter_file(p) and not os.path.isdir(p))
  if not expected:
    with pytest.raises(FileNotFoundError, match='No files match'):
      sources.resolve_files(pattern)
    return
  assert sources.resolve_files(pattern) == expected


def test_the_defect_case_and_explicit_dot_patterns(folder):
  shard = dmvr.shard_path(folder, 'train', 0, 1)
  # The natural glob: the sidecar matched it through TensorFlow's glob.
  assert sources.resolve_files(os.path.join(folder, '*tfrecord*')) == [shard]
  assert sources.resolve_files(os.path.join(folder, '*')) == [
      os.path.join(folder, name) for name in ('notes.txt', os.path.basename(shard))]
  # A pattern that names the dot itself matches hidden files, never the converter's sidecars.
  assert sources.resolve_files(os.path.join(folder, '.*')) == [
      os.path.join(folder, '.hidden.tfrecord')]
  assert sources.resolve_files(os.path.join(folder, '.cache', '*.tfrecord')) == [
      os.path.join(folder, '.cache', 'x.tfrecord')]
  with pytest.raises(FileNotFoundError, match='No files match'):
    sources.resolve_files(os.path.join(folder, '.*.json'))
  # A folder is not a data file: named alone, one sentence says what to name instead.
  with pytest.raises(ValueError, match=r"matches only the folder .*sub: name its TFRecord files, "
                                       r"e.g. .*sub/train-\*-of-\*.tfrecord"):
    sources.resolve_files(os.path.join(folder, 'sub'))


@pytest.mark.parametrize('name,converter', [
    ('.train-00000-of-00003.tfrecord.json', True), ('.train-00000-of-00003.tfrecord.tmp-12', True),
    ('.train-00000-of-00003.tfrecord.json.tmp-12', True), ('labels.txt.tmp-7', True),
    ('test_summary.json.tmp-7', True), ('labels.txt', True), ('train_summary.json', True),
    ('train-00000-of-00003.tfrecord', False), ('.a.tfrecord.tmp-12', False), ('.a.tmp-x', False),
    ('a.tfrecord.json', False), ('train-00000-of-00003.tfrecord.tmp-12', False)])
def test_converter_file_names(name, converter):
  assert dmvr.is_converter_file(name) == converter
