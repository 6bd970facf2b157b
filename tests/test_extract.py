"""Feature extraction from the command line: the features are the kNN job's (same views, same
averaging, computed by the evaluation pipeline), with each video's path and label; an interrupted
run resumes without redoing finished files; .npz and Parquet hold the same rows."""
import io
import os

import jax
import numpy as np
import pytest
from PIL import Image

from cvrl_jax import config_lib
from cvrl_jax import export
from cvrl_jax import extract
from cvrl_jax import sharding
from cvrl_jax.data import dmvr
from cvrl_jax.evaluate import features as features_lib

import test_export_formats

class Stopped(Exception):
  pass


CENTER = dict(views='center_clip', num_frames=4, frame_stride=1, resize=32, crop=32)


def _jpeg(frame):
  out = io.BytesIO()
  Image.fromarray(frame).save(out, format='JPEG', quality=95)
  return out.getvalue()


def _video(rng, frames=6):
  return [_jpeg(rng.integers(0, 255, (36, 44, 3), dtype=np.uint8)) for _ in range(frames)]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  """Two DMVR files of videos with unique labels, a third with one record without frames, and a
  tiny R3D-18 export."""
  root = tmp_path_factory.mktemp('extract')
  rng = np.random.default_rng(0)
  videos = {'a': [(0, 'class0/a0.mp4'), (1, 'class1/a1.mp4')], 'b': [(2, 'class2/b0.mp4')]}
  for name, items in videos.items():
    dmvr.write_shard(str(root / f'{name}.tfrecord'), [
        dmvr.make_sequence_example(_video(rng), label, label_string=f'class{label}',
                                   data_path=path) for label, path in items])
  empty = dmvr.make_sequence_example(_video(rng, 1), 3, data_path='empty.mp4')
  del empty.feature_lists.feature_list[dmvr.IMAGE_KEY].feature[:]
  dmvr.write_shard(str(root / 'c_empty.tfrecord'), [empty])
  cfg = test_export_formats.model_config(depth=18, width=1 / 8)
  backbone_path = export.export_backbone(
      str(root / 'backbone'), jax.device_put(test_export_formats.random_variables(cfg)), cfg)
  return root, backbone_path


def test_features_are_the_knn_jobs(data, tmp_path):
  root, backbone_path = data
  output = str(tmp_path / 'features.npz')
  summary = extract.extract(backbone_path, f'{root}/a.tfrecord,{root}/b.tfrecord', output,
                            batch_size=2, **CENTER)
  assert 'features of 3 videos (0 skipped)' in summary
  got = dict(np.load(output))
  assert list(got['path']) == ['class0/a0.mp4', 'class1/a1.mp4', 'class2/b0.mp4']
  assert list(got['label']) == [0, 1, 2]
  assert list(got['label_string']) == ['class0', 'class1', 'class2']
  assert not os.path.exists(output + extract.PARTS_SUFFIX)

  # The kNN job's path: the evaluation pipeline's centre clips, feature_inference's averaging.
  config = config_lib.base_config()
  config.data.eval_files = f'{root}/[ab].tfrecord'
  config.data.eval_num_frames, config.data.eval_frame_stride = 4, 1
  config.data.eval_resize = config.data.eval_image_size = 32
  mesh = sharding.make_mesh(config.mesh)
  backbone, variables, _ = export.load_backbone(backbone_path, mesh=mesh)
  batches = features_lib.eval_batches(config, mesh, split='eval', mode='center_clip',
                                      batch_size=8)
  knn = features_lib.feature_inference(backbone, mesh).run(variables, batches)
  order = np.argsort(knn['label'])
  np.testing.assert_allclose(got['feature'], knn['features'][order], rtol=1e-5, atol=1e-6)


def test_interrupted_run_resumes_and_formats_agree(data, tmp_path, monkeypatch):
  root, backbone_path = data
  files = f'{root}/*.tfrecord'
  output = str(tmp_path / 'features.parquet')
  calls, stop_at = [], [2]
  real = extract.extract_file

  def failing_second(extractor, path, *args):
    calls.append(os.path.basename(path))
    if len(calls) == stop_at[0]:
      raise Stopped  # the job is stopped while it works on the second file
    return real(extractor, path, *args)

  monkeypatch.setattr(extract, 'extract_file', failing_second)
  with pytest.raises(Stopped):
    extract.extract(backbone_path, files, output, batch_size=2, per_clip=True,
                    views='test_views', num_frames=4, frame_stride=1, resize=32, crop=32,
                    temporal_views=2, spatial_views=1)
  assert not os.path.exists(output)
  parts = output + extract.PARTS_SUFFIX
  assert sorted(os.listdir(parts)) == ['00000.npz', 'progress.json']
  (tmp_path / 'features.parquet.parts' / 'stray.txt').write_text('not ours')
  with pytest.raises(ValueError, match='did not write'):
    extract.extract(backbone_path, files, output, batch_size=2, per_clip=True,
                    views='test_views', num_frames=4, frame_stride=1, resize=32, crop=32,
                    temporal_views=2, spatial_views=1)
  os.unlink(tmp_path / 'features.parquet.parts' / 'stray.txt')
  calls.clear()
  stop_at[0] = 0
  summary = extract.extract(backbone_path, files, output, batch_size=2, per_clip=True,
                            views='test_views', num_frames=4, frame_stride=1, resize=32, crop=32,
                            temporal_views=2, spatial_views=1)
  assert calls == ['b.tfrecord', 'c_empty.tfrecord']  # a.tfrecord was done before
  assert 'of 3 videos (1 skipped)' in summary
  assert not os.path.exists(parts)

  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  table = pq.read_table(output).to_pydict()
  assert table['path'] == ['class0/a0.mp4', 'class1/a1.mp4', 'class2/b0.mp4']
  feature = np.array(table['feature'], np.float32)
  clip_features = np.array(table['clip_features'], np.float32)
  assert clip_features.shape == (3, 2, feature.shape[1])
  np.testing.assert_allclose(feature, clip_features.mean(axis=1), rtol=1e-6, atol=1e-7)
  with pytest.raises(ValueError, match='already exists'):
    extract.extract(backbone_path, files, output, **CENTER)


def test_bad_settings_fail_with_one_sentence(data, tmp_path):
  root, backbone_path = data
  with pytest.raises(ValueError, match='--output must end in one of'):
    extract.extract(backbone_path, f'{root}/a.tfrecord', str(tmp_path / 'f.csv'))
  with pytest.raises(ValueError, match='--temporal_views does not apply to --views=center_clip'):
    extract.extract(backbone_path, f'{root}/a.tfrecord', str(tmp_path / 'f.npz'),
                    views='center_clip', temporal_views=2)
  with pytest.raises(FileNotFoundError, match='No files match'):
    extract.extract(backbone_path, f'{root}/missing-*.tfrecord', str(tmp_path / 'f.npz'))
  with pytest.raises(FileNotFoundError, match='neither an exported backbone'):
    extract.extract(str(tmp_path), f'{root}/a.tfrecord', str(tmp_path / 'f.npz'))
