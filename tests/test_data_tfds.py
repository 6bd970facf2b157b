"""A TFDS video dataset as the pipeline's source (built locally: nothing is downloaded)."""
import numpy as np
import pytest

from cvrl_jax import config_lib
from cvrl_jax.data import pipeline
from cvrl_jax.data import plan as plan_lib
from cvrl_jax.data import sources

tfds = pytest.importorskip('tensorflow_datasets')

LENGTHS = [5, 9, 12, 20, 33, 40, 14, 26, 7, 18]
TRAIN = 6  # videos 0-5 train, 6-9 test


class CvrlTinyVideosJpeg(tfds.core.GeneratorBasedBuilder):
  """Videos whose frame i is a flat grey image of value 10 + 5 i; label v for video v."""

  VERSION = tfds.core.Version('1.0.0')
  ENCODING = 'jpeg'

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'video': tfds.features.Video(shape=(None, 24, 32, 3), encoding_format=self.ENCODING),
        'label': tfds.features.ClassLabel(num_classes=len(LENGTHS))}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(range(TRAIN)),
            'test': self._generate_examples(range(TRAIN, len(LENGTHS)))}

  def _generate_examples(self, videos):
    for v in videos:
      frames = [np.full((24, 32, 3), 10 + 5 * i, np.uint8) for i in range(LENGTHS[v])]
      yield v, {'video': np.stack(frames), 'label': v}


class CvrlTinyVideosPng(CvrlTinyVideosJpeg):
  ENCODING = 'png'  # TFDS's default video encoding


@pytest.fixture(scope='module', params=[CvrlTinyVideosJpeg, CvrlTinyVideosPng])
def tfds_cfg(tmp_path_factory, request):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  builder = request.param(data_dir=data_dir)
  builder.download_and_prepare()
  cfg = config_lib.data_config()
  cfg.tfds_name, cfg.tfds_data_dir, cfg.tfds_eval_split = builder.name, data_dir, 'test'
  cfg.num_frames, cfg.frame_stride, cfg.image_size, cfg.shuffle_buffer = 4, 2, 16, 8
  cfg.eval_num_frames, cfg.eval_frame_stride, cfg.eval_image_size, cfg.eval_resize = 4, 3, 16, 24
  return cfg


def _indices(clips):
  return np.rint((clips.reshape(clips.shape[:-3] + (-1,)).mean(-1) - 10) / 5).astype(int)


def test_pretraining_from_tfds_samples_real_frames(tfds_cfg):
  source = sources.make_source(
      tfds_cfg, 'train', process_index=0, process_count=1, host_split='files')
  assert source.jpeg == tfds_cfg.tfds_name.endswith('jpeg')  # JPEG frames: decode-and-crop
  iterator = pipeline.make_pretrain_iterator(
      tfds_cfg, plan_lib.simple_plan('cvrl_pair', 2), global_batch_size=3, seed=0,
      process_index=0, process_count=1)
  batches = [next(iterator) for _ in range(4)]  # two epochs of the 6 train videos
  labels = np.concatenate([b['label'] for b in batches])
  assert sorted(labels[:6]) == sorted(labels[6:]) == list(range(TRAIN))
  for batch in batches:
    assert batch['video'].shape == (3, 2, 4, 16, 16, 3)
    for video, label in zip(batch['video'], batch['label']):
      indices = _indices(video)
      np.testing.assert_array_equal(indices, (indices[:, :1] + 2 * np.arange(4)) % LENGTHS[label])
  assert sources.num_examples(tfds_cfg, 'eval') == len(LENGTHS) - TRAIN


@pytest.mark.parametrize('host_split', ['files', 'records'])
def test_tfds_eval_covers_the_split_once_over_hosts(tfds_cfg, host_split):
  cfg = tfds_cfg.copy_and_resolve_references()
  cfg.host_split = host_split
  seen = []
  for host in range(2):
    for batch in pipeline.make_eval_iterator(cfg, split='eval', mode='center_clip',
                                             global_batch_size=2, seed=0, process_index=host,
                                             process_count=2):
      seen.extend(batch['label'][batch['mask']].tolist())
  assert sorted(seen) == list(range(TRAIN, len(LENGTHS)))


def test_unknown_tfds_dataset_is_a_clear_error():
  cfg = config_lib.data_config()
  cfg.tfds_name = 'no_such_dataset_here'
  with pytest.raises(ValueError, match="Cannot open TFDS dataset 'no_such_dataset_here'"):
    sources.num_examples(cfg, 'eval')
