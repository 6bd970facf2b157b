"""Audio-only evaluation of AVBERT's audio CNN: audio-only records, the sound layouts of
`convert --audio-only` (class folders, ESC-50), the sound windows of the evaluation pipeline,
the audio export and the audio linear probe."""
import json
import os
import shutil
import wave

import av
import jax
import numpy as np
import pytest
import tensorflow as tf

from cvrl_jax import checkpoint as checkpoint_lib
from cvrl_jax import config_lib
from cvrl_jax import convert
from cvrl_jax import export
from cvrl_jax import run_utils
from cvrl_jax import sharding
from cvrl_jax.data import dmvr
from cvrl_jax.data import pipeline
from cvrl_jax.evaluate import features
from cvrl_jax.evaluate import finetune
from cvrl_jax.evaluate import linear
from cvrl_jax.models import audio_resnet

RATE = 8000


def _write_wav(path, samples, rate=RATE):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pcm = np.clip(np.round(np.asarray(samples) * 32767), -32768, 32767).astype(np.int16)
  with wave.open(path, 'wb') as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(pcm.tobytes())


def _write_flac(path, samples, rate=RATE):
  """A lossless FLAC file through PyAV (the converter reads any format PyAV decodes)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pcm = np.clip(np.round(np.asarray(samples) * 32767), -32768, 32767).astype(np.int16)
  with av.open(path, 'w') as container:
    stream = container.add_stream('flac', rate=rate, layout='mono')
    frame = av.AudioFrame.from_ndarray(pcm[None, :], format='s16', layout='mono')
    frame.rate = rate
    for packet in list(stream.encode(frame)) + list(stream.encode(None)):
      container.mux(packet)


def _tone(freq, n, rng, noise=0.05):
  t = np.arange(n) / RATE
  amplitude = rng.uniform(0.3, 0.6)
  return amplitude * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)) + rng.normal(
      scale=noise, size=n)


def _records(pattern):
  files = sorted(tf.io.gfile.glob(pattern))
  return [dmvr.parse_sequence_example(r, audio=True)
          for r in tf.data.TFRecordDataset(files)]


# ------------------------------------------------------------------------------------------------
# Records.


def test_audio_only_record_round_trip():
  samples = np.random.default_rng(0).normal(size=1234).astype(np.float32)
  example = dmvr.make_sequence_example([], 7, label_string='dog', audio=samples,
                                       audio_sample_rate=44_100)
  assert dmvr.IMAGE_KEY not in example.feature_lists.feature_list
  parsed = dmvr.parse_sequence_example(example.SerializeToString(), audio=True)
  np.testing.assert_array_equal(parsed['audio'].numpy(), samples)  # float32 exactly
  assert int(parsed['audio_sample_rate']) == 44_100
  assert int(parsed['label']) == 7 and parsed['label_string'].numpy() == b'dog'
  assert parsed['frames'].shape == (0,)


@pytest.mark.parametrize('audio', [None, np.zeros([0], np.float32)])
def test_record_with_neither_frames_nor_audio_is_refused(audio):
  with pytest.raises(ValueError, match='at least one frame or a non-empty audio track'):
    dmvr.make_sequence_example([], 0, audio=audio,
                               audio_sample_rate=None if audio is None else RATE)


# ------------------------------------------------------------------------------------------------
# Conversion of sound folders.


def test_esc50_layout_is_written_fold_by_fold_with_the_csv_targets(tmp_path):
  rng = np.random.default_rng(1)
  source = tmp_path / 'ESC-50'
  rows = ['filename,fold,target,category']
  # 3 categories whose targets are not in name order, 2 folds: fold 1 gets 4 sounds, fold 2 3.
  spec = [('a.wav', 1, 2, 'rain'), ('b.wav', 1, 0, 'dog'), ('c.wav', 1, 1, 'cat'),
          ('d.wav', 2, 2, 'rain'), ('e.wav', 2, 0, 'dog'), ('f.wav', 1, 0, 'dog'),
          ('g.wav', 2, 1, 'cat')]
  lengths = {}
  for i, (name, fold, target, category) in enumerate(spec):
    lengths[name] = 800 + 100 * i
    _write_wav(str(source / 'audio' / name), _tone(300 + 50 * i, lengths[name], rng))
    rows.append(f'{name},{fold},{target},{category}')
  (source / 'audio' / 'broken.wav').write_bytes(b'RIFF not really a wave file' * 4)
  rows.append('broken.wav,2,1,cat')
  rows.append('missing.wav,1,1,cat')
  os.makedirs(source / 'meta')
  (source / 'meta' / 'esc50.csv').write_text('\n'.join(rows) + '\n')

  out = tmp_path / 'records'
  summary = convert.convert(str(source), str(out), audio_only=True, audio_rate=RATE, workers=1,
                            quiet=True)
  assert summary['layout'] == 'esc50' and sorted(summary['splits']) == ['fold1', 'fold2']
  assert summary['splits']['fold1']['written'] == 4
  assert summary['splits']['fold2']['written'] == 3  # broken.wav skipped
  skipped = [s['path'] for split in summary['splits'].values() for s in split['skipped']]
  assert sorted(os.path.basename(p) for p in skipped) == ['broken.wav', 'missing.wav']
  assert dmvr.read_labels(str(out)) == ['dog', 'cat', 'rain']  # index = ESC-50 target
  expected = {1: {}, 2: {}}
  for name, fold, target, _ in spec:
    expected[fold][name] = target
  for fold in (1, 2):
    records = _records(str(out / f'fold{fold}-*.tfrecord'))
    got = {os.path.basename(r['data_path'].numpy().decode()): int(r['label']) for r in records}
    assert got == expected[fold]
    for r in records:
      name = os.path.basename(r['data_path'].numpy().decode())
      assert r['frames'].shape == (0,) and int(r['audio_sample_rate']) == RATE
      assert r['audio'].shape == (lengths[name],)  # the whole track at its own rate
    assert json.loads((out / f'fold{fold}_summary.json').read_text())['audio_only']


def test_class_folder_layout_of_sounds(tmp_path):
  rng = np.random.default_rng(2)
  source = tmp_path / 'sounds'
  counts = {'bird': 3, 'car': 2, 'engine': 1}
  originals = {}
  for label, count in counts.items():
    for i in range(count):
      flac = label == 'bird' and i == 2
      path = str(source / label / f'{i}.{"flac" if flac else "wav"}')
      samples = _tone(400 + 200 * i, 1000, rng)
      (_write_flac if flac else _write_wav)(path, samples)
      originals[path] = np.round(np.clip(samples, -1, 1) * 32767) / 32768  # int16 PCM -> float
  (source / 'car' / 'empty.wav').write_bytes(b'')
  summary = convert.convert(str(source), str(tmp_path / 'out'), audio_only=True,
                            audio_rate=RATE, split_name='train', workers=1, quiet=True)
  assert summary['written'] == 6 and len(summary['skipped']) == 1
  assert summary['skipped'][0]['path'].endswith('empty.wav')
  names = dmvr.read_labels(str(tmp_path / 'out'))
  assert names == ['bird', 'car', 'engine']
  records = _records(str(tmp_path / 'out' / 'train-*.tfrecord'))
  assert sorted(names[int(r['label'])] for r in records) == ['bird'] * 3 + ['car'] * 2 + [
      'engine']
  for r in records:
    path = r['data_path'].numpy().decode()
    assert names[int(r['label'])] == os.path.basename(os.path.dirname(path))
    # Same rate: PyAV gives the PCM samples unchanged (up to float32 rounding).
    np.testing.assert_allclose(r['audio'].numpy(), originals[path], atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Sound windows of the evaluation pipeline.


def _tone_dataset(root, per_class, freqs, length, rng, split):
  for c, freq in enumerate(freqs):
    for i in range(per_class):
      _write_wav(os.path.join(root, split, f'class{c}', f'{i}.wav'), _tone(freq, length, rng))


def test_sound_windows_are_slices_of_the_track(tmp_path):
  rng = np.random.default_rng(3)
  _tone_dataset(str(tmp_path / 'src'), 2, (500, 1500), 3000, rng, 'test')
  out = str(tmp_path / 'out')
  convert.convert(str(tmp_path / 'src' / 'test'), out, audio_only=True, audio_rate=RATE,
                  split_name='test', workers=1, quiet=True)
  tracks = [r['audio'].numpy() for r in _records(out + '/test-*.tfrecord')]
  data = config_lib.base_config().data
  data.eval_files = out + '/test-*.tfrecord'
  data.num_classes = 2
  window, count = 1000, 3
  sound = pipeline.SoundWindows(sample_rate=RATE, num_samples=window, num_windows=count)
  batch = next(pipeline.make_eval_iterator(data, split='eval', mode='test_views',
                                           global_batch_size=4, seed=0, sound=sound))
  assert batch['audio'].shape == (4, count, window) and 'video' not in batch
  starts = np.linspace(0, 3000 - window, count).astype(int)  # 0, 1000, 2000
  for row in range(4):
    want = np.stack([tracks[row][s:s + window] for s in starts])
    np.testing.assert_array_equal(batch['audio'][row], want)
  train = next(pipeline.make_eval_iterator(data, split='eval', mode='train_clip',
                                           global_batch_size=4, seed=0, sound=sound,
                                           num_epochs=None))
  assert train['audio'].shape == (4, 1, window)
  for clip in train['audio'][:, 0]:  # one contiguous window of one of the tracks
    assert any(np.array_equal(clip, t[s:s + window]) for t in tracks
               for s in range(len(t) - window + 1))


# ------------------------------------------------------------------------------------------------
# Export.

TINY_AUDIO = {'base_width': 4, 'block_counts': [1, 1, 1, 1], 'bn_epsilon': 1e-5,
              'sample_rate': RATE, 'n_fft': 256, 'hop_length': 64, 'n_mels': 32}


def test_audio_export_round_trip_and_part_checks(tmp_path):
  encoder = audio_resnet.build_audio_encoder(TINY_AUDIO)
  variables = jax.jit(lambda: encoder.init(jax.random.key(0), np.zeros((1, 2000), np.float32),
                                           train=False))()
  # Make the BN statistics non-trivial so a wrong restore cannot pass by accident.
  variables = jax.tree.map(lambda x: x + np.random.default_rng(0).normal(size=x.shape)
                           .astype(x.dtype) * 0.1, dict(variables))
  path = export.export_backbone(str(tmp_path / 'audio'), variables, TINY_AUDIO, part='audio')
  loaded_encoder, loaded, cfg = export.load_audio_cnn(path)
  assert cfg == TINY_AUDIO and loaded_encoder == encoder
  flat, flat_loaded = (jax.tree_util.tree_flatten_with_path(v)[0] for v in (variables, loaded))
  assert [p for p, _ in flat] == [p for p, _ in flat_loaded]
  for (_, a), (_, b) in zip(flat, flat_loaded):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match='holds the audio CNN of an AVBERT run, not a visual'):
    export.load_backbone(path)
  # A visual export: the part check reads only backbone.json, before any array.
  visual_path = tmp_path / 'visual'
  shutil.copytree(path, visual_path)
  metadata = json.loads((visual_path / export.METADATA_FILE).read_text())
  del metadata['part']
  metadata['model'] = config_lib.model_config().to_dict()
  (visual_path / export.METADATA_FILE).write_text(json.dumps(metadata))
  with pytest.raises(ValueError, match='holds a visual backbone, not an audio CNN'):
    export.load_audio_cnn(str(visual_path))
  # An AVBERT pretraining workdir: the audio CNN is the state's 'audio_cnn' entry, its config
  # the run's config.objective (written the way the trainer writes them).
  run = config_lib.base_config()
  with run.unlocked():
    run.objective.update(name='avbert', audio_base_width=4, audio_block_counts=(1, 1, 1, 1),
                         sample_rate=RATE, n_fft=256, hop_length=64, n_mels=32)
  workdir = tmp_path / 'avbert_run'
  os.makedirs(workdir)
  (workdir / export.WORKDIR_CONFIG).write_text(json.dumps(run.to_dict()))
  ones = lambda tree: jax.tree.map(np.ones_like, tree)  # the visual part: anything else
  state = run_utils.TrainState(
      step=np.int32(3), params={'audio_cnn': variables['params'], 'backbone': ones(
          variables['params'])}, batch_stats={'audio_cnn': variables['batch_stats']}, aux={},
      opt_state={})
  saver = checkpoint_lib.Checkpointer(str(workdir / export.WORKDIR_CHECKPOINTS), every_steps=1,
                                      keep=1, async_save=False)
  saver.save(3, state, (0, 3), 'files')
  saver.close()
  _, from_run, run_cfg = export.load_audio_cnn(str(workdir))
  assert run_cfg == TINY_AUDIO
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(from_run)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  other = dict(TINY_AUDIO, n_mels=40)
  mesh = sharding.make_mesh(config_lib.base_config().mesh)
  with pytest.raises(ValueError, match=r'config.eval.audio asks for .*n_mels 32 vs 40'):
    export.load_audio_for_config(path, other, mesh, jax.random.key(0))


# ------------------------------------------------------------------------------------------------
# The audio linear probe and fine-tuning.
#
# The classes differ in texture, not in pitch: the audio CNN mean-pools over time and frequency,
# so a randomly initialised one is close to pitch-invariant (pure tones of 4 well separated
# pitches gave a random-init probe 62% here, against 75-94% for these classes over three seeds).
# Each sound's pitch is random within a class, so the classifier cannot use it.

def _texture(kind, n, rng):
  t = np.arange(n) / RATE
  freq, amplitude = rng.uniform(400, 1200), rng.uniform(0.3, 0.6)
  if kind == 0:  # a steady tone
    x = np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
  elif kind == 1:  # white noise
    x = rng.normal(size=n) * 0.5
  elif kind == 2:  # tone bursts, 40 ms on, 40 ms off
    x = np.sin(2 * np.pi * freq * t) * ((t // 0.04) % 2 == 0)
  else:  # a click train at 50 clicks per second
    x = np.zeros(n)
    x[(rng.integers(0, 160) + np.arange(0, n, 160)) % n] = 1.0
  return amplitude * x + rng.normal(scale=0.02, size=n)


@pytest.fixture(scope='module')
def texture_records(tmp_path_factory):
  """4 classes, 8 training and 4 test sounds each, 3000 samples (0.375 s) at 8 kHz."""
  root = tmp_path_factory.mktemp('textures')
  rng = np.random.default_rng(4)
  out = str(root / 'records')
  for split, per_class in (('train', 8), ('test', 4)):
    for kind in range(4):
      for i in range(per_class):
        _write_wav(str(root / split / f'class{kind}' / f'{i}.wav'), _texture(kind, 3000, rng))
    convert.convert(str(root / split), out, audio_only=True, audio_rate=RATE, split_name=split,
                    workers=1, quiet=True)
  return out


def _tiny_config(records):
  config = config_lib.load_config_file('avbert_audio_demo', records)
  assert config.data.num_classes == 4 and config.eval.modality == 'audio'
  config.eval.audio.update(n_mels=32, n_fft=256, hop_length=64, base_width=4,
                           window_samples=2000, num_windows=2)
  config.eval.batch_size = 8
  config.batch_size = 8
  config.optim.base_batch_size = 8
  return config


# Chance is 25%; 10 of 16 right (62.5%) has probability < 1e-3 under chance (binomial(16, 0.25)),
# and the fixed seed's run sits well above it (94% probe, 94% fine-tuning when measured).
MIN_TOP1 = 0.625


def test_audio_linear_probe_on_a_random_audio_cnn(texture_records, tmp_path):
  config = _tiny_config(texture_records)
  config.num_epochs = 20
  results = linear.linear_eval(config, str(tmp_path))
  assert json.loads((tmp_path / 'results.json').read_text()) == pytest.approx(results)
  assert results['linear_cached_features/num_test_videos'] == 16
  assert results['linear_cached_features/top1'] >= MIN_TOP1, results


def test_audio_finetune_from_random_init(texture_records, tmp_path):
  config = _tiny_config(texture_records)
  config.job = 'finetune'
  config.num_epochs = 10
  config.eval.finetune_dropout = 0.0
  config.optim.weight_decay = 1e-4
  results = finetune.finetune(config, str(tmp_path))
  assert results['finetune/num_test_videos'] == 16
  assert results['finetune/top1'] >= MIN_TOP1, results


def test_esc50_config_holds_out_the_chosen_fold_and_checks_its_keys():
  config = config_lib.load_config_file('avbert_esc50_linear', '/data/esc50,3')
  assert config.data.eval_files == '/data/esc50/fold3-*-of-*.tfrecord'
  assert config.data.train_files.split(',') == [f'/data/esc50/fold{k}-*-of-*.tfrecord'
                                                for k in (1, 2, 4, 5)]
  assert (config.eval.modality, config.eval.audio.sample_rate, config.eval.audio.n_mels,
          config.data.num_classes) == ('audio', 44_100, 80, 50)
  # The paper-scale audio CNN on one window: 128 log-mel frames x 80 bins -> a 1024-d feature.
  encoder = audio_resnet.build_audio_encoder(config.eval.audio.to_dict())
  window = jax.ShapeDtypeStruct((2, config.eval.audio.window_samples), np.float32)
  assert encoder.spectrogram(np.zeros((1, 65_024), np.float32)).shape == (1, 128, 80)
  variables = jax.eval_shape(lambda w: encoder.init(jax.random.key(0), w, train=False), window)
  assert jax.eval_shape(lambda v, w: encoder.apply(v, w, train=False), variables,
                        window).shape == (2, 1024)
  assert config_lib.load_config_file('avbert_esc50_linear', '/d').data.eval_files.startswith(
      '/d/fold1-')
  with pytest.raises(ValueError, match='held-out ESC-50 fold .* must be 1 to 5'):
    config_lib.load_config_file('avbert_esc50_linear', '/data/esc50,6')
  config.eval.modality = 'sound'
  with pytest.raises(ValueError, match=r"config.eval.modality must be one of \('visual', "
                     r"'audio'\)"):
    features.sound_windows(config)
  config.eval.modality = 'audio'
  config.eval.audio.window_samples = 512
  with pytest.raises(ValueError, match='config.eval.audio.window_samples=512 is too short'):
    features.sound_windows(config)
