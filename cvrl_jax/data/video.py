"""Video decoding for the converter: PyAV at a fixed frame rate, short-side resize, JPEG encoding;
and the audio track, mono at a fixed sample rate, aligned to the frames.

Frame-rate conversion follows ffmpeg's `fps` filter (what DMVR's generator runs): input frame i
at time t_i goes to output slot round(t_i * fps); output slot n shows the last input frame whose
slot is <= n; slots run from the first frame's slot up to round(end * fps) (exclusive), where end
is the last frame's time plus its duration. Frames are dropped or repeated so the output rate is
exactly `fps`.

Audio (`decode_audio`) is downmixed to mono and resampled by ffmpeg's swresample (what `ffmpeg
-ac 1 -ar RATE`, DMVR's generator, runs). Given the frames' start time, sample 0 is the sound at
that time (earlier samples dropped, a late-starting track padded with zeros in front), and the
track is cut at the frames' end time, so the sound of frame slot n starts at sample
round(n * rate / fps).
"""
from __future__ import annotations

import dataclasses
import fractions
import io
import math
from typing import Iterator

import av
import numpy as np
from PIL import Image

Fraction = fractions.Fraction


class VideoError(ValueError):
  """A file that cannot be turned into frames (unreadable, not a video, or without frames)."""


class AudioError(ValueError):
  """An audio track that cannot be decoded (the video is then stored without audio)."""


@dataclasses.dataclass(frozen=True)
class DecodedVideo:
  """A video as the converter stores it."""
  jpeg_frames: list[bytes]
  height: int
  width: int
  fps: float  # output rate; the source rate when decoded with fps=None
  start_timestamp_us: int
  end_timestamp_us: int
  num_source_frames: int


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(height, width) with the short side scaled to `short_side` (0: unchanged), aspect kept."""
  if short_side <= 0 or min(height, width) == short_side:
    return height, width
  scale = short_side / min(height, width)
  if height <= width:
    return short_side, max(1, round(width * scale))
  return max(1, round(height * scale)), short_side


def _round_half_up(x: Fraction) -> int:
  return math.floor(x + Fraction(1, 2))


class _FrameSelector:
  """Feed decoded frames in order; yields (frame, times it is shown) as output slots complete."""

  def __init__(self, fps: Fraction):
    self._fps = fps
    self._frame = None
    self._next_slot = None

  def push(self, frame, time: Fraction) -> Iterator[tuple[object, int]]:
    slot = _round_half_up(time * self._fps)
    if self._frame is None:
      self._next_slot = slot
    elif slot > self._next_slot:
      yield self._frame, slot - self._next_slot
      self._next_slot = slot
    self._frame = frame

  def finish(self, end_time: Fraction) -> Iterator[tuple[object, int]]:
    end_slot = _round_half_up(end_time * self._fps)
    if self._frame is not None and end_slot > self._next_slot:
      yield self._frame, end_slot - self._next_slot


def _reason(error: Exception) -> str:
  return getattr(error, 'strerror', None) or str(error)


def _encode_jpeg(frame: av.VideoFrame, height: int, width: int, quality: int) -> bytes:
  rgb = frame.reformat(width=width, height=height, format='rgb24', interpolation='AREA')
  rgb = rgb.to_ndarray()
  buffer = io.BytesIO()
  Image.fromarray(rgb).save(buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


def decode_video(path: str, *, fps: float | None = 10.0, short_side: int = 256,
                 jpeg_quality: int = 90) -> DecodedVideo:
  """Decodes a video file into JPEG frames at `fps` (None: the stream's average frame rate).

  Raises:
    VideoError: the file cannot be opened or decoded, has no video stream, or has no frames.
  """
  try:
    container = av.open(path)
  except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
    raise VideoError(f'Cannot open {path} as a video ({_reason(e)}).') from e
  with container:
    if not container.streams.video:
      raise VideoError(f'{path} has no video stream.')
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    out_fps = Fraction(rate) if fps is None else Fraction(fps).limit_denominator(1001)
    selector = _FrameSelector(out_fps)
    jpegs: list[bytes] = []
    shape = None
    first_time = last_time = None
    last_duration = Fraction(1) / Fraction(rate)
    num_source = 0

    def emit(selected):
      for frame, repeats in selected:
        jpeg = _encode_jpeg(frame, *shape, jpeg_quality)
        jpegs.extend([jpeg] * repeats)

    try:
      for frame in container.decode(stream):
        time_base = frame.time_base or stream.time_base
        if frame.pts is None or time_base is None:
          time = Fraction(num_source) / Fraction(rate)
        else:
          time = frame.pts * Fraction(time_base)
        if shape is None:
          shape = resized_shape(frame.height, frame.width, short_side)
          first_time = time
        if frame.duration and time_base is not None:
          last_duration = frame.duration * Fraction(time_base)
        num_source += 1
        last_time = time if last_time is None else max(last_time, time)
        emit(selector.push(frame, time))
    except av.FFmpegError as e:
      raise VideoError(f'Cannot decode {path} ({_reason(e)}).') from e
    if not num_source:
      raise VideoError(f'{path} has no decodable video frames.')
    end_time = last_time + last_duration
    emit(selector.finish(end_time))
  if not jpegs:
    raise VideoError(f'{path} is too short to give one frame at {float(out_fps):g} fps.')
  start_slot = _round_half_up(first_time * out_fps)
  return DecodedVideo(
      jpeg_frames=jpegs, height=shape[0], width=shape[1], fps=float(out_fps),
      start_timestamp_us=round(start_slot / out_fps * 1_000_000),
      end_timestamp_us=round((start_slot + len(jpegs)) / out_fps * 1_000_000),
      num_source_frames=num_source)


@dataclasses.dataclass(frozen=True)
class DecodedAudio:
  """A video's audio track as the converter stores it."""
  samples: np.ndarray  # float32 [num_samples], mono
  sample_rate: int
  start_timestamp_us: int  # time of samples[0]
  source_rate: int
  source_channels: int


def decode_audio(path: str, *, sample_rate: int, start_timestamp_us: int | None = None,
                 end_timestamp_us: int | None = None) -> DecodedAudio | None:
  """The first audio stream of `path`, mono at `sample_rate`; None if the file has none.

  With `start_timestamp_us` (the frames' start) the samples begin at that time; with
  `end_timestamp_us` they stop there (a track that ends earlier stays shorter).

  Raises:
    AudioError: the file cannot be opened or its audio stream cannot be decoded.
  """
  try:
    container = av.open(path)
  except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
    raise AudioError(f'Cannot open {path} ({_reason(e)}).') from e
  with container:
    if not container.streams.audio:
      return None
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format='flt', layout='mono', rate=sample_rate)
    chunks, first_time = [], None
    try:
      for decoded in container.decode(stream):
        if first_time is None and decoded.pts is not None and decoded.time_base is not None:
          first_time = decoded.pts * Fraction(decoded.time_base)
        for out in resampler.resample(decoded):
          chunks.append(out.to_ndarray().reshape(-1))
      for out in resampler.resample(None):
        chunks.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as e:
      raise AudioError(f'Cannot decode the audio of {path} ({_reason(e)}).') from e
    source_rate = stream.codec_context.sample_rate or stream.rate or 0
    source_channels = stream.codec_context.channels or 0
  samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros([0], np.float32)
  first_time = first_time or Fraction(0)
  start = first_time if start_timestamp_us is None else Fraction(start_timestamp_us, 1_000_000)
  offset = _round_half_up((start - first_time) * sample_rate)
  if offset >= 0:
    samples = samples[offset:]
  else:
    samples = np.concatenate([np.zeros([-offset], np.float32), samples])
  if end_timestamp_us is not None:
    length = _round_half_up((Fraction(end_timestamp_us, 1_000_000) - start) * sample_rate)
    samples = samples[:max(0, length)]
  return DecodedAudio(samples=samples, sample_rate=sample_rate,
                      start_timestamp_us=round(start * 1_000_000), source_rate=int(source_rate),
                      source_channels=int(source_channels))
