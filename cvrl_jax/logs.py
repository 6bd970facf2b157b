"""Readable logs for the command-line entry points (main, demo, compare, export)."""
import logging as std_logging
import sys

from absl import logging


class QuietLibraries(std_logging.Filter):
  """Drops the INFO chatter of libraries that log through absl (Orbax logs every file it writes,
  JAX the accelerator back-ends it did not find) and the library warnings that are expected in
  normal use and read like errors to a user."""
  LIBRARIES = ('/orbax/', '/etils/', '/jax/_src/')
  # Warnings that describe what the code meant to do:
  EXPECTED_WARNINGS = (
      'Given directory is read only',  # Orbax, opening a finished run's checkpoints to read them
      'Metadata file does not exist',  # Orbax, reading a checkpoint item saved without one
      'overriding jax.Array',  # Orbax, checkpoint.py registering its tuned array handler
  )

  def filter(self, record: std_logging.LogRecord) -> bool:
    from_library = any(lib in record.pathname for lib in self.LIBRARIES)
    if not from_library:
      return True
    if record.levelno == std_logging.WARNING:
      message = record.getMessage()
      return not any(text in message for text in self.EXPECTED_WARNINGS)
    return record.levelno > std_logging.WARNING


def setup_logging(verbosity: int | None = None) -> None:
  """One-line records on stdout (time, level, message), without the libraries' INFO lines and
  expected warnings. With absl's --verbosity=1 (or `verbosity` >= 1) everything is shown,
  DEBUG lines included."""
  if verbosity is None:
    verbosity = logging.get_verbosity() if logging.flags.FLAGS.is_parsed() else 0
  handler = logging.get_absl_handler()
  handler.python_handler.stream = sys.stdout
  handler.setFormatter(std_logging.Formatter('%(asctime)s %(levelname).1s %(message)s',
                                             '%Y-%m-%d %H:%M:%S'))
  for f in [f for f in handler.filters if isinstance(f, QuietLibraries)]:
    handler.removeFilter(f)
  if verbosity < 1:
    handler.addFilter(QuietLibraries())
  logging.set_verbosity(max(verbosity, logging.INFO))
  logging.use_absl_handler()
