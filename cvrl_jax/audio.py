"""Log-mel spectrograms of waveforms as jitted JAX ops (on the accelerator, like the augmentations).

`log_mel_spectrogram(waveform)` maps float32 `[..., num_samples]` (mono, in [-1, 1]) to
`[..., num_frames, n_mels]` (time major, as DMVR's `add_spectrogram` returns it):

1. framing: windows of `n_fft` samples every `hop_length` samples; with `center=True` the signal
   is first reflect-padded by n_fft // 2 on each side, so frame k is centred on sample
   k * hop_length and num_frames = 1 + num_samples // hop_length (torchaudio's and librosa's
   default); with `center=False`, num_frames = 1 + (num_samples - n_fft) // hop_length;
2. a periodic Hann window (0.5 - 0.5 cos(2 pi n / n_fft)) and a real FFT, giving n_fft // 2 + 1
   bins from 0 Hz to the Nyquist frequency;
3. power |X|^2;
4. an HTK mel filterbank (mel = 2595 log10(1 + f / 700)): `n_mels` triangles whose corners are
   n_mels + 2 points evenly spaced on the mel scale from `fmin` to `fmax`, each triangle linear in
   Hz and peaking at 1, no area normalisation. This is torchaudio's `MelSpectrogram` default (the
   AVBERT authors' code depends on torchaudio) and librosa's `mel(htk=True, norm=None)`;
5. natural log of max(mel power, `log_floor`).

Everything about the shapes is static (the filterbank is a constant built at trace time), so a
fixed-length audio window compiles once.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

SAMPLE_RATE = 44_100  # AVBERT's audio rate
N_FFT = 2048
HOP_LENGTH = 512
N_MELS = 80
LOG_FLOOR = 1e-6
_HIGHEST = jax.lax.Precision.HIGHEST  # keep the filterbank product in f32 on TPU and GPU


def hz_to_mel(hz):
  """HTK mel scale."""
  return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel):
  return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def check_parameters(*, sample_rate: float, n_fft: int, hop_length: int, n_mels: int,
                     fmin: float, fmax: float | None) -> float:
  """Raises ValueError naming the first bad parameter; returns fmax (None: sample_rate / 2)."""
  if sample_rate <= 0:
    raise ValueError(f'sample_rate must be positive, got {sample_rate}.')
  if n_fft < 2 or hop_length < 1 or n_mels < 1:
    raise ValueError(f'Need n_fft >= 2, hop_length >= 1 and n_mels >= 1; got n_fft={n_fft}, '
                     f'hop_length={hop_length}, n_mels={n_mels}.')
  fmax = sample_rate / 2 if fmax is None else fmax
  if not 0 <= fmin < fmax <= sample_rate / 2:
    raise ValueError(f'Need 0 <= fmin < fmax <= sample_rate / 2 = {sample_rate / 2:g}; got '
                     f'fmin={fmin}, fmax={fmax}.')
  return float(fmax)


def mel_filterbank(*, sample_rate: float = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
  """float32 [n_fft // 2 + 1, n_mels]: the HTK triangles described in the module docstring."""
  fmax = check_parameters(sample_rate=sample_rate, n_fft=n_fft, hop_length=1, n_mels=n_mels,
                          fmin=fmin, fmax=fmax)
  bins_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
  corners = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
  lower, centre, upper = corners[:-2], corners[1:-1], corners[2:]
  rising = (bins_hz[:, None] - lower) / (centre - lower)
  falling = (upper - bins_hz[:, None]) / (upper - centre)
  return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def hann_window(n_fft: int) -> np.ndarray:
  """The periodic Hann window (scipy.signal.get_window('hann', n), torch.hann_window(n))."""
  return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def num_frames(num_samples: int, *, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH,
               center: bool = True) -> int:
  """Frames the spectrogram of `num_samples` samples has."""
  if center:
    return 1 + num_samples // hop_length
  if num_samples < n_fft:
    raise ValueError(f'A waveform of {num_samples} samples is shorter than one frame '
                     f'(n_fft={n_fft}); use center=True or a smaller n_fft.')
  return 1 + (num_samples - n_fft) // hop_length


def frame(waveform: Array, *, n_fft: int, hop_length: int, center: bool) -> Array:
  """[..., num_samples] -> [..., num_frames, n_fft] (windows of the signal, not yet weighted)."""
  if center:
    pad = n_fft // 2
    if waveform.shape[-1] <= pad:
      raise ValueError(f'A waveform of {waveform.shape[-1]} samples is too short to reflect-pad '
                       f'by n_fft // 2 = {pad}; use a smaller n_fft.')
    widths = [(0, 0)] * (waveform.ndim - 1) + [(pad, pad)]
    waveform = jnp.pad(waveform, widths, mode='reflect')
    count = 1 + (waveform.shape[-1] - n_fft) // hop_length
  else:
    count = num_frames(waveform.shape[-1], n_fft=n_fft, hop_length=hop_length, center=False)
  index = hop_length * np.arange(count)[:, None] + np.arange(n_fft)[None, :]
  return waveform[..., index]


def power_spectrogram(waveform: Array, *, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH,
                      center: bool = True) -> Array:
  """[..., num_samples] -> |STFT|^2, float32 [..., num_frames, n_fft // 2 + 1]."""
  frames = frame(jnp.asarray(waveform, jnp.float32), n_fft=n_fft, hop_length=hop_length,
                 center=center)
  spectrum = jnp.fft.rfft(frames * hann_window(n_fft), axis=-1)
  return jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2


@functools.partial(jax.jit, static_argnames=('sample_rate', 'n_fft', 'hop_length', 'n_mels',
                                             'fmin', 'fmax', 'center', 'log_floor'))
def log_mel_spectrogram(waveform: Array, *, sample_rate: float = SAMPLE_RATE, n_fft: int = N_FFT,
                        hop_length: int = HOP_LENGTH, n_mels: int = N_MELS, fmin: float = 0.0,
                        fmax: float | None = None, center: bool = True,
                        log_floor: float = LOG_FLOOR) -> Array:
  """float32 [..., num_samples] -> log mel power, float32 [..., num_frames, n_mels]."""
  check_parameters(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                   fmin=fmin, fmax=fmax)
  if log_floor <= 0:
    raise ValueError(f'log_floor must be positive (the log of 0 is -inf), got {log_floor}.')
  power = power_spectrogram(waveform, n_fft=n_fft, hop_length=hop_length, center=center)
  weights = mel_filterbank(sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin,
                           fmax=fmax)
  mel = jnp.matmul(power, weights, precision=_HIGHEST)
  return jnp.log(jnp.maximum(mel, log_floor))
