"""Export a backbone as a TensorFlow SavedModel (jax2tf): clips [N, T, H, W, 3] -> features [N, C].

    python -m cvrl_jax.export_tf --init_checkpoint=EXPORT_OR_WORKDIR --output=DIR

DIR receives `saved_model/` and `cvrl_jax_manifest.json`. Load it with

    model = tf.saved_model.load('DIR/saved_model')
    features = model.features(clips)        # float32 RGB clips in [0, 1], channels last

`features` (also the 'serving_default' signature) is the encoder's inference function (BN with
its running statistics) converted by jax2tf to one XlaCallModule op holding the StableHLO of
the JAX function, so it computes what JAX computes; the weights are tf.Variables of the
SavedModel (`model.weights`), not constants folded into the graph. Batch size, frames and frame
size are symbolic; the frame height and width must be multiples of 32 (224, 256, ...). Running
it needs TensorFlow with XLA on the loading side (any TF 2 CPU or GPU build).
"""
from absl import flags
import jax
import numpy as np

from cvrl_jax import export_common
from cvrl_jax import models

WRITER = 'export_tf'
SAVED_MODEL_DIR = 'saved_model'
# Frame sizes are symbolic multiples of 32 (224, 256, ...): the stride-32 network then has exact
# sizes at every stage, which jax2tf's shape checks need (ceil(h / 2) written two ways cannot be
# proven equal for a free h).
SIZE_MULTIPLE = 32
POLYMORPHIC_SHAPE = f'(b, t, {SIZE_MULTIPLE}*h, {SIZE_MULTIPLE}*w, 3)'


def features_module(backbone, variables):
  """A tf.Module with the weights as variables and a `features` tf.function."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  leaves, treedef = jax.tree.flatten(variables)
  module = tf.Module()
  module.weights = [tf.Variable(np.asarray(leaf), trainable=False) for leaf in leaves]

  def apply(flat, clips):
    return backbone.apply(jax.tree.unflatten(treedef, flat), clips, train=False)

  converted = jax2tf.convert(apply, polymorphic_shapes=[None, POLYMORPHIC_SHAPE],
                             with_gradient=False)

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, None, None, None, 3], tf.float32, name='clips')])
  def features(clips):
    size = tf.shape(clips)[2:4]
    check = tf.debugging.assert_equal(
        size % SIZE_MULTIPLE, tf.zeros_like(size),
        message=f'clips height and width must be multiples of {SIZE_MULTIPLE}')
    with tf.control_dependencies([check]):
      return converted([w.read_value() for w in module.weights], clips)

  module.features = features
  return module


def export_tf(init_checkpoint: str, output: str) -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  _, variables, model_cfg = export_common.load_checkpoint(init_checkpoint)
  model_cfg.conv_impl = 'conv3d'  # the plain convolution: what any XLA backend runs best
  backbone = models.build_backbone(model_cfg)
  export_common.check_finite(export_common.flat_variables(variables).items(),
                             f'TensorFlow export of {init_checkpoint}')
  out = export_common.OutputDir(output, WRITER)
  module = features_module(backbone, variables)
  out.write_with(SAVED_MODEL_DIR, lambda tmp: tf.saved_model.save(
      module, tmp, signatures={'serving_default': module.features}))
  return out.finish({'source': init_checkpoint,
                     'model': export_common.architecture(model_cfg)})


def _define_flags() -> None:
  export_common.define_checkpoint_flags('Folder for the SavedModel export (new, empty, or an '
                                        'earlier TensorFlow export).')


def main(argv) -> None:
  f = flags.FLAGS
  export_common.run(lambda: f'Exported {f.init_checkpoint} as a TensorFlow SavedModel in '
                            f'{export_tf(f.init_checkpoint, f.output)}', argv)


if __name__ == '__main__':
  export_common.start(_define_flags, main)
