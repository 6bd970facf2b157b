"""`python -m cvrl_jax.inspect`: statistics and the contact sheet."""
import numpy as np
from PIL import Image

from cvrl_jax import inspect as inspect_tool
from cvrl_jax.data import demo
from cvrl_jax.data import dmvr


def test_statistics_and_contact_sheet(tmp_path, capsys):
  paths = demo.make_demo_dataset(str(tmp_path / 'data'), num_train=12, num_test=6, num_frames=20,
                                 seed=0, num_test_shards=1)
  # Two extra videos of 7 and 9 frames with label 3, to make the statistics non-trivial.
  frames = [demo._jpeg(np.zeros((64, 64), np.uint8))]  # pylint: disable=protected-access
  extra = str(tmp_path / 'data' / 'extra.tfrecord')
  dmvr.write_shard(extra, [dmvr.make_sequence_example(frames * n, 3) for n in (7, 9)])
  sheet = str(tmp_path / 'sheet.png')
  assert inspect_tool.main([paths['test'], extra, '--output', sheet, '--num-videos', '3',
                            '--num-frames', '4', '--image-size', '32']) == 0
  out = capsys.readouterr().out
  assert '8 videos in 2 file(s)' in out
  assert 'frames per video: min 7, median 20, max 20' in out
  labels = {}
  for line in out.splitlines():
    fields = line.split()
    if len(fields) >= 4 and fields[0].isdigit() and fields[-1].startswith('#'):
      labels[int(fields[0])] = int(fields[2])
  assert sum(labels.values()) == 8 and labels[3] >= 2
  image = Image.open(sheet)
  # 3 videos x 2 views of 4 frames of 32 pixels, plus a text column and 4-pixel gaps.
  assert image.size == (inspect_tool.LABEL_WIDTH + 4 * 36, 3 * (2 * 36 + 4))


def test_missing_files_are_a_clear_error(tmp_path, capsys):
  assert inspect_tool.main([str(tmp_path / 'none-*.tfrecord')]) == 1
  assert 'No files match' in capsys.readouterr().err
