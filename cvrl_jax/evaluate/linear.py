"""The linear_eval job: a linear classifier on the frozen encoder's L2-normalised features.

Recipe (docs/recipes/cvrl.md "Evaluation"): the backbone is frozen with BatchNorm in inference
mode; its feature is L2-normalised and fed to Dense(num_classes); SGD momentum 0.9, LR 32 at batch
1024 (linear scaling), warmup then cosine, no weight decay (the linear configs set these). Training
clips: one random clip per video with the host's random resized crop ('train_clip' mode) and a
random flip on the device. Test: softmax averaged over 10 temporal x 3 spatial views.

config.eval.linear_cached_features=True is the faster variant: centre-clip features of the train
split are computed once and the classifier trains on them (no training augmentation); its results
are named 'linear_cached_features/...' so they are never mistaken for the recipe's 'linear/...'.

config.eval.linear_standardize=True trains the same classifier in standardised coordinates: each
dimension of the L2-normalised feature is centred and scaled by its mean and standard deviation
over the train split's centre clips, and the trained classifier is folded back into Dense(C) on
the L2-normalised feature. The model is the recipe's (an affine map of the L2-normalised feature);
only SGD's conditioning changes. Contrastive features sit in a narrow cone (most of their length
is shared by every video), so on a short schedule plain SGD spends its steps on the shared
direction and under-fits (BENCHMARKS.md, "Demo"); MAE's linear probe puts a parameter-free
BatchNorm before its classifier for the same reason. As there (and in scikit-learn's
StandardScaler) every dimension gets unit variance, so the classifier's input has norm about
sqrt(C) instead of 1 and a given LR takes C times larger steps in the logits: choose the LR for
that (the demo keeps the recipe's, with C = 128).

With config.eval.modality='audio' the encoder is AVBERT's audio CNN on labelled sounds
(docs/recipes/avbert.md, "Audio-only evaluation"): training takes one random window per sound,
cached features and tests average config.eval.audio.num_windows fixed windows; the rest is the
same.

Both variants resume like pretraining (common.train_loop): a SIGTERM saves the classifier, its
optimiser and the input position in WORKDIR/checkpoints and returns; the same command continues
to the results of an uninterrupted run.
"""
import dataclasses
import itertools
from typing import Any, Callable, Dict, Iterator, Tuple

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from cvrl_jax import augment
from cvrl_jax import models
from cvrl_jax import sharding
from cvrl_jax import run_utils
from cvrl_jax.data import sources
from cvrl_jax.evaluate import common
from cvrl_jax.evaluate import features
from cvrl_jax.evaluate import subsets

PyTree = Any
TRAIN_POLICY = 'flip_only'


def make_probe(num_classes: int) -> models.LinearClassifier:
  return models.LinearClassifier(num_classes=num_classes, l2_normalize=True)


def _identity(params: PyTree) -> PyTree:
  return params


@dataclasses.dataclass(frozen=True)
class FeatureStandardizer:
  """Per-dimension mean and scale of L2-normalised features, and the fold that turns a classifier
  trained on standardised features z = (x - mean) / scale into Dense(C) on x itself."""
  mean: np.ndarray  # [C]
  scale: np.ndarray  # [C]
  active: np.ndarray  # [C] bool: dimensions that vary over the training set

  @classmethod
  def fit(cls, features_: np.ndarray) -> 'FeatureStandardizer':
    x = np.asarray(models.l2_normalize(jnp.asarray(features_, jnp.float32)), np.float64)
    mean, std = x.mean(0), x.std(0)
    # A dimension constant over the training set (a ReLU never active) carries no information;
    # dropping it keeps a test video where it fires from meeting a huge weight.
    active = std > 1e-6 * max(float(std.max()), 1e-12)
    return cls(mean=mean.astype(np.float32), scale=np.where(active, std, 1.0).astype(np.float32),
               active=active)

  def fold(self, params: PyTree) -> PyTree:
    """Params trained on standardised features -> the same logits from L2-normalised features."""
    kernel, bias = params['dense']['kernel'], params['dense']['bias']
    kernel = kernel * (self.active / self.scale)[:, None]
    return {'dense': {'kernel': kernel, 'bias': bias - jnp.asarray(self.mean) @ kernel}}


def probe_param_map(config: ml_collections.ConfigDict, train_features: Callable[[], np.ndarray]
                    ) -> Callable[[PyTree], PyTree]:
  """trained params -> the probe's params: the standardiser's fold when
  config.eval.linear_standardize (fitted on train_features()), else the identity."""
  if not config.eval.get('linear_standardize', False):
    return _identity
  standardizer = FeatureStandardizer.fit(train_features())
  logging.info('Linear probe trained on standardised features (%d of %d dimensions vary).',
               int(standardizer.active.sum()), standardizer.active.size)
  return standardizer.fold


def head_update(probe: nn.Module, tx: optax.GradientTransformation, schedule: optax.Schedule,
                state: run_utils.TrainState, feats: jax.Array, labels: jax.Array, mask: jax.Array,
                to_probe_params: Callable[[PyTree], PyTree] = _identity
                ) -> Tuple[run_utils.TrainState, Dict[str, jax.Array]]:
  """One SGD step of the classifier on features [B, C] (rows with mask False carry no weight).
  The trained parameters are to_probe_params(state.params) (see FeatureStandardizer)."""
  weight = mask.astype(jnp.float32)
  count = jnp.maximum(jnp.sum(weight), 1.0)

  def loss_fn(params):
    logits = probe.apply({'params': to_probe_params(params)}, feats)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(loss * weight) / count, logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  correct = (jnp.argmax(logits, -1) == labels) * weight
  metrics = {'loss': loss, 'train_top1': jnp.sum(correct) / count,
             'learning_rate': schedule(state.step)}
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            opt_state=opt_state)
  return new_state, metrics


def init_probe_state(probe: nn.Module, num_features: int, config: ml_collections.ConfigDict,
                     num_train_examples: int, mesh: Mesh
                     ) -> Tuple[run_utils.TrainState, optax.GradientTransformation,
                                optax.Schedule, int]:
  rng = jax.random.fold_in(jax.random.key(config.seed), 2)
  params = jax.jit(lambda r: probe.init(r, jnp.zeros((1, num_features)))['params'],
                   out_shardings=sharding.replicated(mesh))(rng)
  schedule, tx, num_steps = common.schedule_and_optimizer(config, num_train_examples, params)
  opt_state = jax.jit(tx.init, out_shardings=sharding.replicated(mesh))(params)
  step = jax.device_put(jnp.zeros((), jnp.int32), sharding.replicated(mesh))  # as it is restored
  state = run_utils.TrainState(step=step, params=params, batch_stats={}, aux={},
                               opt_state=opt_state)
  return state, tx, schedule, num_steps


def training_inputs(keys: jax.Array, batch: Dict[str, jax.Array]) -> jax.Array:
  """The encoder's input of a training batch: one clip per video with a random flip, or (audio)
  the sound's one random window [B, A], as the pipeline cut it."""
  if 'audio' in batch:
    return batch['audio'][:, 0]
  return augment.augment_batch(keys, batch['video'], (TRAIN_POLICY,))[:, 0]


def probe_logits_fn(backbone: nn.Module, probe: nn.Module
                    ) -> Callable[[PyTree, jax.Array], jax.Array]:
  """variables {'encoder', 'probe'}, video uint8 [B, V, ...] -> logits [B, V, classes]."""
  def logits_fn(variables, video):
    feats = features.backbone_features(backbone, variables['encoder'], video)
    return probe.apply({'params': variables['probe']}, feats)
  return logits_fn


# ------------------------------------------------------------------------------------------------
# The recipe: features of augmented clips every step.
# ------------------------------------------------------------------------------------------------
def train_on_clips(backbone: nn.Module, encoder: PyTree, probe: nn.Module,
                   config: ml_collections.ConfigDict, mesh: Mesh, workdir: str
                   ) -> Tuple[PyTree, Dict[str, float], bool]:
  # The standardiser's statistics are label-free: every training video. The clips the classifier
  # trains on come from config.eval.label_fraction's labelled subset.
  to_probe_params = probe_param_map(
      config, lambda: centre_clip_train_features(backbone, encoder, config, mesh)['features'])
  config, _ = subsets.restrict_train_files(config, workdir)
  num_train = sources.num_examples(config.data, 'train')
  state, tx, schedule, num_steps = init_probe_state(probe, backbone.num_features, config, num_train,
                                                    mesh)
  base_key = jax.random.fold_in(jax.random.key(config.seed), 3)

  def step_fn(state, encoder, batch):
    keys = augment.example_keys(base_key, batch['key'])
    clips = training_inputs(keys, batch)
    feats = jax.lax.stop_gradient(backbone.apply(encoder, clips, train=False))
    return head_update(probe, tx, schedule, state, feats, batch['label'], batch['mask'],
                       to_probe_params)

  jitted = jax.jit(step_fn, donate_argnums=0)
  logging.info('Linear probe: %d steps of %d clips on %d training videos.', num_steps,
               config.batch_size, num_train)
  state, metrics, finished = common.train_loop(
      lambda s, b: jitted(s, encoder, b), state,
      lambda position: common.training_clip_batches(config, mesh, position), num_steps,
      config=config, workdir=workdir, writer=common.metric_writer(workdir),
      examples_per_step=config.batch_size, name='linear_eval')
  return to_probe_params(state.params), metrics, finished


# ------------------------------------------------------------------------------------------------
# The faster variant: cached centre-clip features.
# ------------------------------------------------------------------------------------------------
def epoch_permutations(num_examples: int, batch_size: int, seed: int, start: int = 0
                       ) -> Iterator[np.ndarray]:
  """Batches of indices: a fresh permutation of the examples every epoch, batches across epochs;
  the first `start` batches are skipped (a resumed run continues with batch `start`)."""
  rng = np.random.default_rng(seed)
  pending = np.zeros((0,), np.int32)
  for index in itertools.count():
    while len(pending) < batch_size:
      pending = np.concatenate([pending, rng.permutation(num_examples).astype(np.int32)])
    if index >= start:
      yield pending[:batch_size]
    pending = pending[batch_size:]


def centre_clip_train_features(backbone: nn.Module, encoder: PyTree,
                               config: ml_collections.ConfigDict, mesh: Mesh
                               ) -> Dict[str, np.ndarray]:
  return features.feature_inference(backbone, mesh).run(
      encoder, features.eval_batches(config, mesh, split='train', mode='center_clip'),
      name='train features (center_clip)')


def train_on_cached_features(backbone: nn.Module, encoder: PyTree, probe: nn.Module,
                             config: ml_collections.ConfigDict, mesh: Mesh, workdir: str
                             ) -> Tuple[PyTree, Dict[str, float], bool]:
  train = centre_clip_train_features(backbone, encoder, config, mesh)
  to_probe_params = probe_param_map(config, lambda: train['features'])  # all videos: label-free
  fraction = float(config.eval.label_fraction)
  if fraction < 1.0:  # config.eval.label_fraction: the classifier sees the labelled subset only
    keep = subsets.class_balanced_subset(train['label'], fraction, config.seed)
    subsets.write_subset_list(workdir, keep, train['label'], fraction, config.seed)
    train = {'features': train['features'][keep], 'label': train['label'][keep]}
  num_train = len(train['label'])
  bank = jax.device_put(train['features'], sharding.replicated(mesh))
  bank_labels = jax.device_put(train['label'].astype(np.int32), sharding.replicated(mesh))
  state, tx, schedule, num_steps = init_probe_state(probe, bank.shape[1], config, num_train, mesh)
  sharding.check_batch_size(config.batch_size, mesh)

  def step_fn(state, bank, bank_labels, indices):
    return head_update(probe, tx, schedule, state, bank[indices], bank_labels[indices],
                       jnp.ones(indices.shape, bool), to_probe_params)

  jitted = jax.jit(step_fn, donate_argnums=0)
  batch_sharding = sharding.batch_sharding(mesh)

  def batches(position):  # position (0, n): n batches of indices already used
    for n, indices in enumerate(epoch_permutations(num_train, config.batch_size, config.seed,
                                                   start=position[1]), start=position[1] + 1):
      yield jax.device_put(indices, batch_sharding), (0, n)

  logging.info('Linear probe on cached features: %d steps of %d on %d training videos.',
               num_steps, config.batch_size, num_train)
  state, metrics, finished = common.train_loop(
      lambda s, i: jitted(s, bank, bank_labels, i), state, batches, num_steps, config=config,
      workdir=workdir, writer=common.metric_writer(workdir), examples_per_step=config.batch_size,
      name='linear_eval (cached features)')
  return to_probe_params(state.params), metrics, finished


# ------------------------------------------------------------------------------------------------
# The job.
# ------------------------------------------------------------------------------------------------
def linear_eval(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  """Trains the linear classifier on config.init_checkpoint's frozen encoder, then tests it."""
  mesh = common.start_job(config, workdir)
  backbone, encoder, _ = common.load_encoder(config, mesh)
  probe = make_probe(config.data.num_classes)
  if config.eval.linear_cached_features:
    prefix, train = 'linear_cached_features', train_on_cached_features
  else:
    prefix, train = 'linear', train_on_clips
  probe_params, train_metrics, finished = train(backbone, encoder, probe, config, mesh, workdir)
  if not finished:  # stopped by SIGTERM: the same command resumes; results.json comes at the end
    return {'finished': False}
  evaluator = common.ClassifierEvaluator(probe_logits_fn(backbone, probe), config, mesh,
                                         prefix=prefix)
  results = dict(evaluator.run({'encoder': encoder, 'probe': probe_params}))
  results[f'{prefix}/train_loss'] = train_metrics['loss']
  results[f'{prefix}/train_top1'] = train_metrics['train_top1']
  common.log_results(config.job, results)
  common.write_results(workdir, results)
  return results
