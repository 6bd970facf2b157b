"""Audio-visual classification through the AVBERT Transformer (the av_finetune job,
docs/recipes/avbert.md): the restored network equals the pretraining checkpoint, the classifier's
gradient reaches both CNNs and the shared layer, results.json's top-1 is the predictions', and
the bad inputs stop with one sentence.
"""
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cvrl_jax import config_lib
from cvrl_jax import sharding
from cvrl_jax import trainer
from cvrl_jax.data import demo
from cvrl_jax.evaluate import av_finetune

NUM_TRAIN, NUM_TEST = 16, 16
# test_avbert's tiny network: R3D-10 at width 0.125, 2 clips of 2 frames at 16 px, 1,000 samples
# (0.125 s at 8 kHz) as 16 mel bins, an audio CNN of one stage at width 4, a Transformer of
# hidden 16 with one application of the shared layer.
TINY = dict(num_clips=2, clip_frames=2, audio_samples=1000, n_fft=128, hop_length=64, n_mels=16,
            audio_base_width=4, audio_block_counts=(1,), hidden_size=16, num_heads=2, ffn_size=32,
            num_layers=1, rank=4, num_negatives=5)


def _tiny(config, data_dir):
  with config.unlocked():
    config.batch_size = 8
    config.eval.batch_size = 8
    config.model.depth = 10
    config.model.width_multiplier = 0.125
    config.model.conv_impl = 'conv3d'
    config.data.image_size = 16
    config.data.shuffle_buffer = 16
    config.data.host_split = 'records'
    config.log_every_steps = 1
    config.checkpoint.every_steps = 1000
    for key, value in TINY.items():
      config.objective[key] = value
  return config


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  root = tmp_path_factory.mktemp('av')
  data = str(root / 'data')
  demo.make_demo_dataset(data, num_train=NUM_TRAIN, num_test=NUM_TEST, num_frames=8,
                         num_train_shards=1, num_test_shards=1, audio=True)
  pretrain_dir = str(root / 'pretrain')
  config = _tiny(config_lib.load_config_file('avbert_demo', data), data)
  with config.unlocked():
    config.num_train_steps = 2
  trainer.pretrain(config, pretrain_dir)
  return dict(root=root, data=data, pretrain=pretrain_dir)


def _finetune_config(env, **overrides):
  config = _tiny(config_lib.load_config_file('avbert_av_finetune_demo', env['data']), env['data'])
  with config.unlocked():
    config.init_checkpoint = env['pretrain']
    for key, value in overrides.items():
      target, name = config, key
      while '.' in name:
        head, name = name.split('.', 1)
        target = target[head]
      target[name] = value
  return config


def _checkpoint_state(workdir):
  """The latest checkpoint's raw state, read by Orbax alone (NumPy arrays)."""
  folder = os.path.join(workdir, 'checkpoints')
  step = max(int(s) for s in os.listdir(folder) if s.isdigit())
  return ocp.PyTreeCheckpointer().restore(os.path.join(folder, str(step), 'state'))


def test_the_restored_network_is_the_pretraining_checkpoint(env):
  config = _finetune_config(env)
  mesh = sharding.make_mesh(config.mesh)
  objective, network = av_finetune.build(config)
  state = av_finetune.init_state(network, objective, config, NUM_TRAIN, mesh)[0]
  stored = _checkpoint_state(env['pretrain'])
  restored = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})
  assert set(restored['params']) == set(av_finetune.ENCODER_PARTS) | {'classifier'}
  for collection in ('params', 'batch_stats'):
    for part, tree in restored[collection].items():
      if part == 'classifier':
        continue
      want = stored[collection][part]
      assert jax.tree.structure(tree) == jax.tree.structure(want), part
      for got, expected in zip(jax.tree.leaves(tree), jax.tree.leaves(want)):
        np.testing.assert_array_equal(got, expected)
  # The pretraining heads are not part of the classifier.
  assert {'mask_tokens', 'visual_head', 'correspondence_head'} <= set(stored['params'])


def test_a_short_run_reaches_every_part_and_reports_its_predictions_top1(env):
  workdir = str(env['root'] / 'ft')
  # No weight decay: with SGD a weight that moved had a nonzero gradient.
  config = _finetune_config(env, num_train_steps=2, **{'optim.weight_decay': 0.0})
  results = av_finetune.av_finetune(config, workdir)
  with open(os.path.join(workdir, 'results.json')) as f:
    written = json.load(f)
  predictions = np.load(os.path.join(workdir, 'predictions.npz'))
  scores, labels = predictions['scores'], predictions['label']
  assert scores.shape == (NUM_TEST, 10) and sorted(labels.tolist()) == sorted(
      _labels_of(env['data'], 'test'))
  np.testing.assert_allclose(written['av_finetune/top1'],
                             np.mean(np.argmax(scores, axis=1) == labels), atol=1e-6)
  top5 = np.mean([label in np.argsort(-row)[:5] for row, label in zip(scores, labels)])
  np.testing.assert_allclose(written['av_finetune/top5'], top5, atol=1e-6)
  assert written['av_finetune/num_test_videos'] == NUM_TEST
  assert written['av_finetune/top1'] == pytest.approx(results['av_finetune/top1'])

  before, after = _checkpoint_state(env['pretrain']), _checkpoint_state(workdir)
  change = lambda a, b: sum(float(np.abs(np.asarray(x) - np.asarray(y)).sum())
                            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  layer = lambda state: state['params']['transformer']['encoder']['layer0']
  moved = {part: change(after['params'][part], before['params'][part])
           for part in ('backbone', 'audio_cnn', 'visual_adaptor', 'audio_adaptor')}
  moved['shared ffn_out'] = change(layer(after)['ffn_out'], layer(before)['ffn_out'])
  for group in range(3):  # the visual, audio and joint passes' projections of the shared layer
    moved[f'query group {group}'] = change(layer(after)['query']['in_proj'][group],
                                           layer(before)['query']['in_proj'][group])
  assert all(v > 0 for v in moved.values()), moved
  # The pretraining heads are not trained (nor kept).
  assert 'visual_head' not in after['params']


def _labels_of(data, split):
  from cvrl_jax.data import dmvr  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import glob  # pylint: disable=g-import-not-at-top
  labels = []
  for path in sorted(glob.glob(os.path.join(data, f'{split}-*.tfrecord'))):
    for record in tf.data.TFRecordDataset(path):
      labels.append(int(dmvr.parse_sequence_example(record)['label']))
  return labels


def test_records_without_audio_stop_naming_the_file(env):
  silent = str(env['root'] / 'silent')
  demo.make_demo_dataset(silent, num_train=2, num_test=2, num_frames=8, num_train_shards=1,
                         num_test_shards=1)
  config = _finetune_config(env)
  with config.unlocked():
    config.data.train_files = os.path.join(silent, 'train-*-of-*.tfrecord')
  with pytest.raises(ValueError, match=r'The first record of .*silent/train-.*tfrecord has no '
                                       r'audio track'):
    av_finetune.av_finetune(config, str(env['root'] / 'silent_run'))


def test_an_init_checkpoint_of_another_method_is_refused(env, tmp_path):
  other = tmp_path / 'cvrl_run'
  (other / 'checkpoints').mkdir(parents=True)
  (other / 'config.json').write_text(json.dumps({'job': 'pretrain', 'objective': {'name': 'cvrl'}}))
  config = _finetune_config(env, init_checkpoint=str(other))
  with pytest.raises(ValueError, match=r"is not an AVBERT pretraining run .*objective 'cvrl'"):
    av_finetune.av_finetune(config, str(tmp_path / 'run'))


def test_an_init_checkpoint_of_another_architecture_names_the_keys(env, tmp_path):
  config = _finetune_config(env, **{'objective.num_layers': 2, 'objective.hidden_size': 32,
                                    'objective.rank': 8})
  with pytest.raises(ValueError, match=r'another AVBERT architecture .*objective.hidden_size 16 '
                                       r'vs 32; objective.num_layers 1 vs 2; '
                                       r'objective.rank 4 vs 8'):
    av_finetune.av_finetune(config, str(tmp_path / 'run'))


def test_num_classes_that_disagree_with_the_labels_are_refused(env, tmp_path):
  config = _finetune_config(env, **{'data.num_classes': 5})
  with pytest.raises(ValueError, match=r'config.data.num_classes is 5 but .*labels.txt names 10'):
    av_finetune.av_finetune(config, str(tmp_path / 'run'))


def test_a_batch_label_outside_num_classes_is_one_sentence():
  with pytest.raises(ValueError, match=r'A test video has label 7, outside \[0, 5\)'):
    av_finetune.check_labels(np.array([1, 7, 2]), 5, 'test')


def test_an_unknown_pooling_is_one_sentence_naming_the_key():
  config = config_lib.load_config_file('avbert_av_finetune_demo', '/nowhere')
  with config.unlocked():
    config.eval.av_pooling = 'max'
  with pytest.raises(ValueError, match=r"config.eval.av_pooling must be one of \('summary', "
                                       r"'mean'\), got 'max'"):
    av_finetune.build(config)
