"""Paths that are local folders or URLs (gs://bucket/..., and any scheme etils.epath knows).

Every file a job reads or writes by name goes through these few functions, so a workdir, a data
folder, an init_checkpoint or an export output may be either. A URL is never made absolute (that
would turn gs://b/runs into a local folder named gs:). Local paths get `~` expanded and become
absolute. URLs are opened through etils.epath, which uses TensorFlow's file systems when
TensorFlow is installed (its gs:// client reads the machine's Google credentials), as the input
pipeline, TensorBoard and Orbax do. docs/running_on_a_bucket.md has the set-up.
"""
import json
import os
import posixpath
from typing import Any

from etils import epath


def is_url(path: str) -> bool:
  """True for SCHEME://... (gs://, s3://, ...), False for a local path."""
  return '://' in os.fspath(path)


def absolute(path: str) -> str:
  """A URL unchanged (without a trailing slash); a local path with `~` expanded, made absolute."""
  path = os.fspath(path)
  if is_url(path):
    scheme, rest = path.split('://', 1)
    return f'{scheme}://{rest.rstrip("/")}' if rest.strip('/') else path
  return os.path.abspath(os.path.expanduser(path))


def join(base: str, *parts: str) -> str:
  """os.path.join for local paths; '/'-joined for URLs on every platform."""
  return posixpath.join(base, *parts) if is_url(base) else os.path.join(base, *parts)


def parent(path: str) -> str:
  """The folder that holds `path` (a URL's parent stays a URL)."""
  path = absolute(path)
  return posixpath.dirname(path) if is_url(path) else os.path.dirname(path)


def exists(path: str) -> bool:
  return epath.Path(path).exists()


def isdir(path: str) -> bool:
  return epath.Path(path).is_dir()


def isfile(path: str) -> bool:
  p = epath.Path(path)
  return p.exists() and not p.is_dir()


def makedirs(path: str) -> None:
  """Creates the folder and its parents (on object stores, where folders are implicit, this
  writes nothing or a marker object)."""
  epath.Path(path).mkdir(parents=True, exist_ok=True)


def listdir(path: str) -> list[str]:
  """Names (not paths) of the entries of a folder, sorted."""
  return sorted(p.name for p in epath.Path(path).iterdir())


def size(path: str) -> int:
  """Size of a file in bytes."""
  return int(epath.Path(path).stat().length)


def remove(path: str) -> None:
  epath.Path(path).unlink()


def replace(source: str, target: str) -> None:
  """Renames `source` to `target`, replacing it. Atomic on local file systems; on object stores
  a copy then a delete (the target object appears whole when the copy completes)."""
  if is_url(source) or is_url(target):
    epath.Path(source).replace(target)
  else:
    os.replace(source, target)


def read_text(path: str) -> str:
  return epath.Path(path).read_text(encoding='utf-8')


def write_text(path: str, text: str) -> None:
  """Writes a whole text file so that a reader never sees half of it.

  Local: a temporary file in the same folder, renamed over `path`. URL: a single object write,
  which object stores commit whole when the write closes (GCS never shows a partial object).
  """
  if is_url(path):
    epath.Path(path).write_text(text, encoding='utf-8')
    return
  tmp = f'{path}.tmp-{os.getpid()}'
  try:
    with open(tmp, 'w', encoding='utf-8') as f:
      f.write(text)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def read_bytes(path: str) -> bytes:
  return epath.Path(path).read_bytes()


def write_bytes(path: str, data: bytes) -> None:
  """Writes a whole binary file so that a reader never sees half of it (see write_text)."""
  if is_url(path):
    epath.Path(path).write_bytes(data)
    return
  tmp = f'{path}.tmp-{os.getpid()}'
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def read_json(path: str) -> Any:
  return json.loads(read_text(path))


def write_json(path: str, obj: Any) -> None:
  """`obj` as indented, key-sorted JSON, written whole (see write_text)."""
  write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def glob(pattern: str) -> list[str]:
  """Sorted paths matching a glob pattern, local or URL (through tf.io.gfile, which the input
  pipeline uses too)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return sorted(tf.io.gfile.glob(pattern if is_url(pattern) else os.path.expanduser(pattern)))


def glob_folder(pattern: str) -> str:
  """The folder a glob pattern looks in: its path up to the last '/' before the first of * ? [
  ('' when the pattern has no folder part)."""
  pattern = pattern if is_url(pattern) else os.path.expanduser(pattern)
  first = min([i for i in (pattern.find(c) for c in '*?[') if i >= 0], default=len(pattern))
  return pattern[:pattern.rfind('/', 0, first) + 1].rstrip('/') if '/' in pattern[:first] else ''


def missing_folder_error(pattern: str) -> FileNotFoundError | None:
  """'The folder ... does not exist.' when the folder a pattern looks in is missing, else None."""
  folder = glob_folder(pattern)
  if folder and not exists(folder):
    return FileNotFoundError(f'The folder {folder} does not exist (in the pattern {pattern!r}).')
  return None
