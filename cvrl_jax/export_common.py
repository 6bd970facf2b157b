"""What the weight import/export and feature-extraction entry points share.

  * the command-line body: `--init_checkpoint` / `--output` flags, loading the backbone, and every
    expected failure (bad path, wrong architecture, unwritable output) reported as one sentence on
    stderr with exit status 2 (`run`);
  * the output rules of every writer here: an output folder is written only if it is absent,
    empty, or holds exactly the files an earlier run of the same writer listed in its manifest
    (`OutputDir`); files appear under their final names only when complete (write to a temporary
    name, then rename); nothing non-finite is exported (`check_finite`).
"""
import os
import shutil
import sys
import tempfile
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Tuple

from absl import flags
from etils import epath
import jax
import ml_collections
import numpy as np

from cvrl_jax import paths

PyTree = Any
MANIFEST_FILE = 'cvrl_jax_manifest.json'


class ExportError(ValueError):
  """An expected failure of an export: its message is one sentence for the user."""


# ------------------------------------------------------------------------------------------------
# Output folders.
# ------------------------------------------------------------------------------------------------
class OutputDir:
  """A folder one writer owns: refuses folders holding files it did not write.

  `OutputDir(path, writer)` checks the folder at construction; `write_bytes` / `write_text` /
  `write_with` put files in place whole; `finish()` records the written names in the manifest,
  the last file written, so a folder with a manifest is complete. `path` may be a local folder or
  a URL (gs://...; cvrl_jax.paths): a URL's files are written locally first, then copied up.
  """

  def __init__(self, path: str, writer: str):
    if not path:
      raise ExportError(f'{writer}: no output folder given (--output).')
    self.path = paths.absolute(path)
    self.writer = writer
    self.written: list[str] = []
    if paths.exists(self.path) and not paths.isdir(self.path):
      raise ExportError(f'{writer}: the output {self.path} exists and is not a folder.')
    if paths.isdir(self.path):
      self._check_owned()
    else:
      try:
        paths.makedirs(self.path)
      except OSError as e:
        raise ExportError(f'{writer}: cannot create the output folder {self.path} '
                          f'({e.strerror or e}).') from e

  def _check_owned(self) -> None:
    present = paths.listdir(self.path)
    if not present:
      return
    manifest = self.file(MANIFEST_FILE)
    owned: set = set()
    if paths.isfile(manifest):
      try:
        record = paths.read_json(manifest)
      except (OSError, ValueError):
        record = {}
      if record.get('writer') == self.writer:
        owned = set(record.get('files', ())) | {MANIFEST_FILE}
    foreign = [name for name in present if name not in owned]
    if foreign:
      raise ExportError(
          f'{self.writer}: the output folder {self.path} is not empty and holds files this '
          f'writer did not write ({", ".join(foreign[:3])}{", ..." if len(foreign) > 3 else ""}); '
          f'choose a new or empty folder.')
    paths.remove(manifest)  # the folder is incomplete until the new manifest is written

  def file(self, name: str) -> str:
    return paths.join(self.path, name)

  def write_bytes(self, name: str, data: bytes) -> str:
    return self.write_with(name, lambda tmp: _write_file(tmp, data))

  def write_text(self, name: str, text: str) -> str:
    return self.write_bytes(name, text.encode('utf-8'))

  def write_with(self, name: str, write: Callable[[str], None]) -> str:
    """Calls `write(temporary_path)` (which creates that file or folder), then moves it to
    `name` in the output, replacing this writer's earlier file or folder of that name."""
    final = self.file(name)
    if paths.is_url(self.path):
      with tempfile.TemporaryDirectory(prefix='cvrl_jax_export_') as staging:
        local = os.path.join(staging, name)
        write(local)
        _upload(local, final)
    else:
      tmp = os.path.join(self.path, f'.{name}.tmp-{os.getpid()}')
      try:
        write(tmp)
        if os.path.isdir(final):  # an earlier run's folder of the same name (the check owns it)
          shutil.rmtree(final)
        os.replace(tmp, final)
      finally:
        if os.path.isdir(tmp):
          shutil.rmtree(tmp)
        elif os.path.exists(tmp):
          os.unlink(tmp)
    self.written.append(name)
    return final

  def finish(self, info: Optional[Mapping[str, Any]] = None) -> str:
    record = {'writer': self.writer, 'files': sorted(set(self.written)), **dict(info or {})}
    paths.write_json(self.file(MANIFEST_FILE), record)
    return self.path


def _upload(local: str, url: str) -> None:
  """Copies a local file or folder to a URL (an earlier object or folder there is replaced)."""
  target = epath.Path(url)
  if target.is_dir():
    target.rmtree()
  if os.path.isdir(local):
    for root, _, files in os.walk(local):
      relative = os.path.relpath(root, local)
      folder = target if relative == '.' else target / relative
      folder.mkdir(parents=True, exist_ok=True)
      for name in files:
        epath.Path(os.path.join(root, name)).copy(folder / name, overwrite=True)
  else:
    epath.Path(local).copy(target, overwrite=True)


def require_new_folder(path: str, writer: str) -> str:
  """The absolute path (or URL) of `path` if it is absent or an empty folder, else an
  ExportError (for writers whose output has no manifest of its own, such as a backbone export)."""
  if not path:
    raise ExportError(f'{writer}: no output folder given (--output).')
  path = paths.absolute(path)
  if paths.exists(path) and (not paths.isdir(path) or paths.listdir(path)):
    raise ExportError(f'{writer}: the output {path} already exists and is not an empty folder; '
                      'choose a new or empty folder.')
  return path


def _write_file(path: str, data: bytes) -> None:
  with open(path, 'wb') as f:
    f.write(data)


def atomic_write(path: str, write: Callable[[str], None]) -> None:
  """`write(tmp)` next to `path`, then renames it to `path` (a reader never sees half a file)."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', dir=directory)
  os.close(fd)
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


# ------------------------------------------------------------------------------------------------
# Values.
# ------------------------------------------------------------------------------------------------
def check_finite(named_arrays: Iterable[Tuple[str, Any]], what: str) -> None:
  """Raises ExportError naming the first array with a NaN or an infinity."""
  for name, value in named_arrays:
    array = np.asarray(value)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
      bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
      raise ExportError(f'{what}: {name} has {bad} non-finite value(s); nothing was exported.')


def flat_leaves(variables: Mapping[str, PyTree]) -> dict[str, Any]:
  """{'params': ..., 'batch_stats': ...} -> {'params/stem_conv/kernel': leaf, ...}."""
  flat = {}
  for collection in ('params', 'batch_stats'):
    leaves = jax.tree_util.tree_flatten_with_path(variables.get(collection, {}))[0]
    for path, leaf in leaves:
      keys = [getattr(p, 'key', getattr(p, 'name', str(p))) for p in path]
      flat['/'.join([collection] + [str(k) for k in keys])] = leaf
  return flat


def flat_variables(variables: Mapping[str, PyTree]) -> dict[str, np.ndarray]:
  """`flat_leaves` with every leaf fetched as a NumPy array."""
  return {name: np.asarray(jax.device_get(leaf)) for name, leaf in flat_leaves(variables).items()}


def architecture(model_cfg: ml_collections.ConfigDict) -> dict:
  """The config.model keys that define the function (what a reloaded model needs)."""
  from cvrl_jax import export  # pylint: disable=g-import-not-at-top
  return {key: model_cfg[key] for key in export.ARCHITECTURE_KEYS}


# ------------------------------------------------------------------------------------------------
# Command line.
# ------------------------------------------------------------------------------------------------
def define_checkpoint_flags(output_help: str) -> None:
  """--init_checkpoint (an export or a pretraining workdir) and --output."""
  flags.DEFINE_string('init_checkpoint', None,
                      'A cvrl_jax backbone export or pretraining workdir (its latest checkpoint).',
                      required=True)
  flags.DEFINE_string('output', None, output_help, required=True)


def load_checkpoint(path: str):
  """(module, variables, config.model) of a backbone export or a workdir, in float32."""
  from cvrl_jax import export  # pylint: disable=g-import-not-at-top
  from cvrl_jax import models  # pylint: disable=g-import-not-at-top
  _, variables, model_cfg = export.load_backbone(path)
  model_cfg = ml_collections.ConfigDict(model_cfg.to_dict())
  model_cfg.dtype = 'float32'  # exports and features are computed in float32
  model_cfg.remat = False
  return models.build_backbone(model_cfg), variables, model_cfg


EXPECTED_ERRORS = (ValueError, OSError)  # OSError: missing files, export.ExportError, storage


def run(body: Callable[[], str], argv: Sequence[str]) -> None:
  """The body of an entry point's main: configures the process, runs `body`, prints its result;
  an expected failure is printed as one sentence (exit status 2), never a traceback (shown with
  --verbosity=1)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  from cvrl_jax import logs  # pylint: disable=g-import-not-at-top
  from cvrl_jax import startup  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if flags.FLAGS.is_parsed():
    logs.setup_logging()
  startup.configure_process()
  try:
    message = body()
  except EXPECTED_ERRORS as e:
    logging.debug('Traceback of the error below:', exc_info=True)
    print(f'Error: {e}', file=sys.stderr)
    sys.exit(2)
  if message:
    print(message)


def start(define_flags: Callable[[], None], main: Callable[[Sequence[str]], None]) -> None:
  """`if __name__ == '__main__'` of an entry point: TensorFlow's and XLA's start-up lines kept
  quiet (unless --verbosity=1), its flags defined, absl's app run."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from cvrl_jax import startup  # pylint: disable=g-import-not-at-top
  startup.quiet_native_logs(startup.verbosity_from_argv(sys.argv))
  define_flags()
  app.run(main)
