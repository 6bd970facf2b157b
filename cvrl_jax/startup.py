"""Process set-up that the entry points (main, demo, compare, export, bench/) do before JAX starts.

Importing a library module of cvrl_jax changes nothing in the process; an entry point calls
`configure_process()` once, first thing.
"""


def configure_process() -> None:
  """The measured-best XLA:CPU flags (`models.conv.apply_cpu_xla_flags`) and TensorFlow, which
  only feeds the input pipeline, kept off the accelerators JAX uses."""
  from cvrl_jax.models import conv  # pylint: disable=g-import-not-at-top
  conv.apply_cpu_xla_flags()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  tf.config.set_visible_devices([], 'TPU')
