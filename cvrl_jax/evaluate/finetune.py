"""The finetune job: the whole network (encoder + classifier) trained on labelled videos.

Recipe (docs/recipes/cvrl.md "Evaluation": the reference has no CVRL fine-tune config; its
generic supervised video recipe): 32-frame clips at stride 2, 224 crops, batch 64, LR 0.8, 100
epochs, weight decay 1e-4 on kernels, SGD momentum 0.9, warmup then cosine (configs/finetune_*.py).
BatchNorm trains (statistics over the global batch); dropout before the classifier
(config.eval.finetune_dropout). Training clips are the host's random resized crop plus a flip on
the device; testing averages softmax over the views of config.eval.test_mode (30 by default).
The encoder starts from config.init_checkpoint (empty: random initialisation, the supervised
from-scratch baseline). UCF101 / HMDB51 in the class-folder layout are converted with
`python -m cvrl_jax.convert` (one conversion per official split's train and test lists).
With config.eval.modality='audio' it fine-tunes AVBERT's audio CNN on labelled sounds instead
(random training windows with SpecAugment at config.eval.audio.spec_augment_rate; tests average
fixed windows; docs/recipes/avbert.md, "Audio-only evaluation").
The job resumes like pretraining (common.train_loop: checkpoints in WORKDIR/checkpoints, SIGTERM
saves and returns, the same command continues to an uninterrupted run's results).
"""
from typing import Any, Dict

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from cvrl_jax import augment
from cvrl_jax import models
from cvrl_jax import sharding
from cvrl_jax import run_utils
from cvrl_jax.data import sources
from cvrl_jax.evaluate import common
from cvrl_jax.evaluate import linear
from cvrl_jax.evaluate import subsets

PyTree = Any
TRAIN_POLICY = 'flip_only'


class VideoClassifier(nn.Module):
  """clips [N, T, H, W, 3] -> logits [N, num_classes]: backbone, dropout, Dense."""
  backbone: nn.Module
  num_classes: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    feats = self.backbone(x, train=train)
    feats = nn.Dropout(self.dropout, deterministic=not train)(feats)
    return models.LinearClassifier(self.num_classes, name='classifier')(feats)


def init_state(network: VideoClassifier, encoder: PyTree, config: ml_collections.ConfigDict,
               num_train_examples: int, mesh: Mesh):
  """The train state (sharded per config.mesh) with the encoder's weights in params['backbone']."""
  rng = jax.random.fold_in(jax.random.key(config.seed), 4)

  def init(rng, encoder):
    # Only the new classifier is initialised (initialising the whole network would compile the
    # backbone's initialisers just to discard their output).
    classifier = models.LinearClassifier(network.num_classes).init(
        rng, jnp.zeros((1, network.backbone.num_features), jnp.float32))['params']
    params = {'backbone': encoder['params'], 'classifier': classifier}
    return params, {'backbone': encoder['batch_stats']}

  abstract_params, _ = jax.eval_shape(init, rng, encoder)
  schedule, tx, num_steps = common.schedule_and_optimizer(config, num_train_examples,
                                                          abstract_params)

  def make_state(rng, encoder):
    params, batch_stats = init(rng, encoder)
    return run_utils.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                batch_stats=batch_stats, aux={}, opt_state=tx.init(params))

  shardings = sharding.state_shardings(jax.eval_shape(make_state, rng, encoder), mesh,
                                       config.mesh.fsdp_min_size)
  state = jax.jit(make_state, out_shardings=shardings)(rng, encoder)
  return state, shardings, tx, schedule, num_steps


def finetune(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  """Fine-tunes config.init_checkpoint's encoder with a new classifier, then tests it."""
  mesh = common.start_job(config, workdir)
  backbone, encoder, _ = common.load_encoder(config, mesh)
  network = VideoClassifier(backbone=backbone, num_classes=config.data.num_classes,
                            dropout=config.eval.finetune_dropout)
  config, _ = subsets.restrict_train_files(config, workdir)  # config.eval.label_fraction
  num_train = sources.num_examples(config.data, 'train')
  state, shardings, tx, schedule, num_steps = init_state(network, encoder, config, num_train, mesh)
  del encoder
  base_key = jax.random.fold_in(jax.random.key(config.seed), 5)
  dropout_key = jax.random.fold_in(jax.random.key(config.seed), 6)

  def step_fn(state, batch):
    keys = augment.example_keys(base_key, batch['key'])
    clips = linear.training_inputs(keys, batch)  # (audio: SpecAugment in the encoder)
    labels = batch['label']
    weight = batch['mask'].astype(jnp.float32)
    count = jnp.maximum(jnp.sum(weight), 1.0)

    def loss_fn(params):
      logits, updates = network.apply(
          {'params': params, 'batch_stats': state.batch_stats}, clips, train=True,
          rngs={'dropout': jax.random.fold_in(dropout_key, state.step)}, mutable=['batch_stats'])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return jnp.sum(loss * weight) / count, (logits, updates['batch_stats'])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              batch_stats=batch_stats, opt_state=opt_state)
    metrics = {'loss': loss,
               'train_top1': jnp.sum((jnp.argmax(logits, -1) == labels) * weight) / count,
               'learning_rate': schedule(state.step)}
    return new_state, metrics

  jitted = jax.jit(step_fn, donate_argnums=0,
                   out_shardings=(shardings, sharding.replicated(mesh)))
  logging.info('Fine-tuning: %d steps of %d clips on %d training videos.', num_steps,
               config.batch_size, num_train)
  state, train_metrics, finished = common.train_loop(
      jitted, state, lambda position: common.training_clip_batches(config, mesh, position),
      num_steps, config=config, workdir=workdir, writer=common.metric_writer(workdir),
      examples_per_step=config.batch_size, name='finetune')
  if not finished:  # stopped by SIGTERM: the same command resumes; results.json comes at the end
    return {'finished': False}

  def logits_fn(variables, video):
    b, v = video.shape[:2]
    clips = augment.to_float(video.reshape((b * v,) + video.shape[2:]))
    return network.apply(variables, clips, train=False).reshape(b, v, -1)

  evaluator = common.ClassifierEvaluator(logits_fn, config, mesh, prefix='finetune')
  results = dict(evaluator.run({'params': state.params, 'batch_stats': state.batch_stats}))
  results['finetune/train_loss'] = train_metrics['loss']
  results['finetune/train_top1'] = train_metrics['train_top1']
  common.log_results(config.job, results)
  common.write_results(workdir, results)
  return results
