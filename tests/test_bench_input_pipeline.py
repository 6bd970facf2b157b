"""bench/input_pipeline.py's --model-garden-python: its validation and its hand-off.

The real companion needs tf-models-official (never installed here), so a stand-in interpreter, a
shell script, records the command line it is given and answers the way the companion does.
"""
import argparse
import importlib.util
import os
import stat
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    'bench_input_pipeline', os.path.join(REPO_ROOT, 'bench', 'input_pipeline.py'))
input_pipeline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(input_pipeline)


def _executable(path, text):
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IXUSR)
  return str(path)


def test_model_garden_python_is_validated(tmp_path):
  input_pipeline.check_model_garden_python('', ours_only=True)  # not asked for: nothing to check
  input_pipeline.check_model_garden_python(sys.executable, ours_only=False)
  with pytest.raises(ValueError, match='--model-garden-python.*--ours-only'):
    input_pipeline.check_model_garden_python(sys.executable, ours_only=True)
  with pytest.raises(ValueError, match='--model-garden-python must be an executable'):
    input_pipeline.check_model_garden_python(str(tmp_path / 'missing'), ours_only=False)
  plain = tmp_path / 'python'
  plain.write_text('')
  with pytest.raises(ValueError, match='--model-garden-python must be an executable'):
    input_pipeline.check_model_garden_python(str(plain), ours_only=False)
  with pytest.raises(ValueError, match='--model-garden-python must be an executable'):
    input_pipeline.check_model_garden_python(str(tmp_path), ours_only=False)


def test_model_garden_gets_the_same_records_and_settings(tmp_path):
  seen = tmp_path / 'argv'
  python = _executable(tmp_path / 'python', '#!/bin/sh\n'
                       f'echo "$@" > {seen}\n'
                       'echo "log line"\n'
                       'echo \'JSON {"clips": 48, "clips_per_cpu_s": 21.5}\'\n')
  args = argparse.Namespace(threads=1, batch=8, batches=3, warmup=2)
  result = input_pipeline.measure_model_garden(python, ['/r/a.tfrecord', '/r/b.tfrecord'], args)
  assert result == {'clips': 48, 'clips_per_cpu_s': 21.5}
  assert seen.read_text().split() == [
      input_pipeline.MODEL_GARDEN_SCRIPT, '--files', '/r/a.tfrecord,/r/b.tfrecord',
      '--threads', '1', '--batch', '8', '--batches', '3', '--warmup', '2', '--json', '-']


def test_model_garden_failure_shows_its_error(tmp_path):
  python = _executable(tmp_path / 'python', '#!/bin/sh\n'
                       'echo "ModuleNotFoundError: No module named official" >&2\nexit 3\n')
  args = argparse.Namespace(threads=1, batch=8, batches=3, warmup=2)
  with pytest.raises(RuntimeError, match=r'(?s)exit 3.*No module named official'):
    input_pipeline.measure_model_garden(python, ['/r/a.tfrecord'], args)
