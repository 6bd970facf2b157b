"""cvrl_jax.paths: URLs stay URLs, local paths become absolute, whole-file writes.

A real bucket is in tests/test_gcs_end_to_end.py; here the rules themselves.
"""
import os

import pytest

from cvrl_jax import paths


@pytest.mark.parametrize('url, expected', [
    ('gs://bucket/runs/k400', 'gs://bucket/runs/k400'),
    ('gs://bucket/runs/k400/', 'gs://bucket/runs/k400'),
    ('gs://bucket', 'gs://bucket'),
    ('s3://b/x', 's3://b/x'),
])
def test_a_url_is_never_made_absolute(url, expected):
  assert paths.is_url(url)
  assert paths.absolute(url) == expected  # os.path.abspath would give CWD/gs:/bucket/...
  assert os.path.abspath(url) != expected


def test_local_paths_are_expanded_and_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  assert not paths.is_url('runs/a')
  assert paths.absolute('runs/a') == str(tmp_path / 'runs' / 'a')
  assert paths.absolute('~/runs') == str(tmp_path / 'home' / 'runs')


def test_join_and_parent_keep_urls():
  assert paths.join('gs://b/runs', 'x', 'config.json') == 'gs://b/runs/x/config.json'
  assert paths.parent('gs://b/runs/x/config.json') == 'gs://b/runs/x'
  assert paths.join('/tmp/a', 'b') == os.path.join('/tmp/a', 'b')
  assert paths.parent('/tmp/a/b') == '/tmp/a'


@pytest.mark.parametrize('pattern, folder', [
    ('/data/k400/train-*.tfrecord', '/data/k400'),
    ('gs://b/k400/train-*-of-*.tfrecord', 'gs://b/k400'),
    ('/data/k4?0/train-*.tfrecord', '/data'),
    ('train-*.tfrecord', ''),
    ('/data/k400/train-00000-of-00001.tfrecord', '/data/k400'),
])
def test_glob_folder_is_the_part_before_the_first_wildcard(pattern, folder):
  assert paths.glob_folder(pattern) == folder


def test_a_missing_folder_is_named_and_an_existing_one_is_not(tmp_path):
  error = paths.missing_folder_error(str(tmp_path / 'nope' / 'train-*.tfrecord'))
  assert isinstance(error, FileNotFoundError)
  assert str(error) == (f'The folder {tmp_path / "nope"} does not exist (in the pattern '
                        f"'{tmp_path / 'nope' / 'train-*.tfrecord'}').")
  assert paths.missing_folder_error(str(tmp_path / 'train-*.tfrecord')) is None


def test_local_files_are_written_whole_and_leave_no_temporary(tmp_path):
  path = str(tmp_path / 'results.json')
  paths.write_json(path, {'b': 1, 'a': [1, 2]})
  assert paths.read_json(path) == {'a': [1, 2], 'b': 1}
  paths.write_text(path, 'replaced')
  assert paths.read_text(path) == 'replaced'
  assert paths.listdir(str(tmp_path)) == ['results.json']
  assert paths.size(path) == len('replaced')
  paths.makedirs(str(tmp_path / 'x' / 'y'))
  assert paths.isdir(str(tmp_path / 'x' / 'y')) and not paths.isfile(str(tmp_path / 'x'))
  paths.replace(path, str(tmp_path / 'x' / 'moved.json'))
  assert not paths.exists(path) and paths.isfile(str(tmp_path / 'x' / 'moved.json'))
  assert paths.glob(str(tmp_path / 'x' / '*.json')) == [str(tmp_path / 'x' / 'moved.json')]
