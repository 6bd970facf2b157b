"""Readable logs for the command-line entry points (main, demo, compare)."""
import logging as std_logging
import sys

from absl import logging


class QuietLibraries(std_logging.Filter):
  """Drops the INFO chatter of libraries that log through absl (Orbax logs every file it writes)."""
  LIBRARIES = ('/orbax/', '/etils/')

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or not any(
        lib in record.pathname for lib in self.LIBRARIES)


def setup_logging() -> None:
  """One-line records on stdout (time, level, message), without the libraries' INFO lines."""
  handler = logging.get_absl_handler()
  handler.python_handler.stream = sys.stdout
  handler.setFormatter(std_logging.Formatter('%(asctime)s %(levelname).1s %(message)s',
                                             '%Y-%m-%d %H:%M:%S'))
  if not any(isinstance(f, QuietLibraries) for f in handler.filters):
    handler.addFilter(QuietLibraries())
  logging.set_verbosity(logging.INFO)
  logging.use_absl_handler()
