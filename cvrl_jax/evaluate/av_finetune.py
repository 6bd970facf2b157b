"""The av_finetune job: audio-visual classification through the AVBERT Transformer.

The whole AVBERT encoder (visual R3D, audio CNN, both CNN adaptors and the shared multimodal
Transformer) is restored from an AVBERT pretraining workdir (config.init_checkpoint; empty: random
initialisation, the from-scratch baseline) and fine-tuned end to end with a new linear classifier
on labelled videos with sound (docs/recipes/avbert.md, "Audio-visual classification"):

  per video the sequence of config.objective.num_clips clips of the AVBERT plan with the audio
  window aligned to each clip -> visual and audio passes -> joint pass -> the joint pass's visual
  and audio summary tokens, concatenated [B, 2 * hidden_size] (config.eval.av_pooling='mean':
  the means of its outputs at the visual and at the audio clips instead) -> dropout
  (config.eval.finetune_dropout) -> Dense(num_classes).

No clip is masked and every video keeps its own audio. The pretraining heads (mask tokens, MEP
and correspondence heads) are not restored: the classifier does not use them. Training reads the
train split through the pretraining pipeline (random resized crops, the plan's on-device
augmentation, SpecAugment); testing reads one sequence per test video (the eval split) with the
same temporal sampler at a fixed seed and whole frames (no random crop), and reports top-1/top-5
in results.json; its per-video scores go to WORKDIR/predictions.npz. Resumes like `finetune`
(common.train_loop).
"""
import dataclasses
import io
from typing import Any, Dict, Iterator, Mapping, Tuple

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import Mesh

from cvrl_jax import augment
from cvrl_jax import checkpoint as checkpoint_lib
from cvrl_jax import export
from cvrl_jax import models
from cvrl_jax import paths
from cvrl_jax import run_utils
from cvrl_jax import sharding
from cvrl_jax.data import pipeline
from cvrl_jax.data import records
from cvrl_jax.data import sources
from cvrl_jax.evaluate import common
from cvrl_jax.models import av_transformer
from cvrl_jax.objectives import avbert
from cvrl_jax.objectives import base
from cvrl_jax.objectives import build_objective

PyTree = Any
PREDICTIONS_FILE = 'predictions.npz'
# The parts of AVBERTNetwork the classifier uses (its parameter names there).
ENCODER_PARTS = ('backbone', 'audio_cnn', 'visual_adaptor', 'audio_adaptor', 'transformer')
# config.objective keys that shape the restored network or change its function.
ARCHITECTURE_KEYS = ('num_clips', 'audio_base_width', 'audio_block_counts', 'hidden_size',
                     'num_heads', 'ffn_size', 'num_layers', 'rank', 'n_mels')
BATCH_KEYS = ('video', 'audio', 'label', 'key')
# What the classifier reads from the joint pass (config.eval.av_pooling): its visual and audio
# summary tokens, or the means of its outputs at the visual and at the audio clips.
POOLINGS = ('summary', 'mean')


class AVClassifier(nn.Module):
  """Clips [B, V, T, H, W, 3] and log-mel [B, V, frames, mels] -> logits [B, num_classes]."""
  backbone: nn.Module
  audio_cnn: nn.Module
  transformer: av_transformer.MultimodalTransformer
  hidden_size: int
  num_classes: int
  dropout: float = 0.0
  pooling: str = 'summary'

  def setup(self):
    # Named as in avbert.AVBERTNetwork, so its parameters load unchanged.
    self.visual_adaptor = av_transformer.CNNAdaptor(self.hidden_size)
    self.audio_adaptor = av_transformer.CNNAdaptor(self.hidden_size)
    self.head_dropout = nn.Dropout(self.dropout)
    self.classifier = models.LinearClassifier(self.num_classes)

  def summary(self, clips: jax.Array, spectrograms: jax.Array, train: bool) -> jax.Array:
    """The joint pass's visual and audio summary tokens (pooling 'summary') or the means of its
    visual and audio clip outputs ('mean'), concatenated: [B, 2 * hidden_size]."""
    b, v = clips.shape[:2]
    visual = self.visual_adaptor(self.backbone(base.merge_views(clips), train=train))
    audio = self.audio_adaptor(self.audio_cnn(base.merge_views(spectrograms)[..., None],
                                              train=train))
    deterministic = not train
    visual_out = self.transformer.encode_modality(visual.reshape(b, v, -1), 'visual',
                                                  deterministic)
    audio_out = self.transformer.encode_modality(audio.reshape(b, v, -1), 'audio', deterministic)
    joint = self.transformer.fuse(visual_out, audio_out, deterministic)
    if self.pooling == 'mean':
      return jnp.concatenate([joint[:, 1:1 + v].mean(1), joint[:, 2 + v:].mean(1)], axis=-1)
    return jnp.concatenate([joint[:, 0], joint[:, 1 + v]], axis=-1)

  def __call__(self, clips: jax.Array, spectrograms: jax.Array, train: bool) -> jax.Array:
    x = self.head_dropout(self.summary(clips, spectrograms, train), deterministic=not train)
    return self.classifier(x)


# ------------------------------------------------------------------------------------------------
# Restoring the AVBERT encoder from a pretraining workdir.
# ------------------------------------------------------------------------------------------------
def _pretraining_config(path: str) -> Dict[str, Any]:
  """config.json of an AVBERT pretraining workdir, or a ValueError saying what `path` is."""
  if export.is_export(path):
    raise ValueError(f'init_checkpoint {path} is an exported visual backbone; av_finetune '
                     'restores the whole AVBERT network: give its pretraining workdir.')
  if not export.is_workdir(path):
    raise FileNotFoundError(f'init_checkpoint {path} is not a pretraining workdir (no '
                            f'{export.WORKDIR_CHECKPOINTS}/ and {export.WORKDIR_CONFIG}).')
  # pylint: disable-next=protected-access
  run_config = export._read_json(epath.Path(path, export.WORKDIR_CONFIG))
  name = run_config.get('objective', {}).get('name')
  if run_config.get('job', 'pretrain') != 'pretrain' or name != 'avbert':
    raise ValueError(f'init_checkpoint {path} is not an AVBERT pretraining run (its config.json '
                     f'has job {run_config.get("job")!r}, objective {name!r}); av_finetune needs '
                     'the workdir of an objective.name=avbert pretraining.')
  return run_config


def check_architecture(run_config: Mapping[str, Any], config: ml_collections.ConfigDict,
                       path: str) -> None:
  """Raises ValueError naming every architecture key where the run and the config differ."""
  diffs = [f'model.{k} {run_config["model"][k]!r} vs {config.model[k]!r}'
           for k in export.ARCHITECTURE_KEYS if run_config['model'].get(k) != config.model[k]]
  for k in ARCHITECTURE_KEYS:
    stored, wanted = run_config['objective'].get(k), config.objective[k]
    if isinstance(wanted, (tuple, list)):
      stored, wanted = tuple(stored or ()), tuple(wanted)
    if stored != wanted:
      diffs.append(f'objective.{k} {stored!r} vs {wanted!r}')
  if diffs:
    raise ValueError(f'init_checkpoint {path} was pretrained with another AVBERT architecture '
                     f'than the config asks for ({"; ".join(diffs)}); set those keys to the '
                     'pretraining run\'s.')


def restore_encoder(path: str, target: PyTree) -> PyTree:
  """{'params', 'batch_stats'} of ENCODER_PARTS from the latest checkpoint of the AVBERT
  pretraining workdir `path`, restored into `target` (abstract arrays with their shardings)."""
  # pylint: disable=protected-access  (export's workdir helpers, shared rather than copied)
  directory = export.workdir_state_dir(path)
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    stored = checkpointer.metadata(directory).item_metadata.tree
    expected = export._flat_shapes(target)
    have = export._flat_shapes({c: {p: stored[c][p] for p in target[c] if p in stored[c]}
                                for c in target})
    for name, shape in expected.items():
      if have.get(name) != shape:
        raise ValueError(f'init_checkpoint {path} does not hold the AVBERT weights the config '
                         f'builds: {name} is {have.get(name, "missing")}, expected {shape}.')
    restored = checkpointer.restore(directory, args=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True))
  finally:
    checkpointer.close()
  bad = checkpoint_lib.non_finite_leaves(restored)
  if bad:
    raise ValueError(f'init_checkpoint {path} holds NaN or infinite weights ({bad[0]}).')
  return restored


# ------------------------------------------------------------------------------------------------
# Data.
# ------------------------------------------------------------------------------------------------
def evaluation_plan(plan):
  """The training plan at test time: the same clips and audio windows, whole frames."""
  return dataclasses.replace(plan.replace_views(crop_area_range=(1.0, 1.0),
                                                crop_aspect_range=(1.0, 1.0)), resolved=False)


def check_data(config: ml_collections.ConfigDict, plan) -> None:
  """Both splits hold audio at the plan's rate and labels.txt agrees with data.num_classes."""
  for split in ('train', 'eval'):
    source = sources.make_source(config.data, split, process_index=0, process_count=1,
                                 host_split='records')
    source.check_audio(plan.audio.sample_rate)
    records.EvalChecks(config.data, source)  # its constructor compares labels.txt


def check_labels(labels: np.ndarray, num_classes: int, split: str) -> None:
  bad = labels[(labels < 0) | (labels >= num_classes)]
  if bad.size:
    raise ValueError(f'A {split} video has label {int(bad[0])}, outside [0, {num_classes}) of '
                     f'config.data.num_classes = {num_classes}; set data.num_classes to the '
                     'number of classes of the data.')


def training_batches(config: ml_collections.ConfigDict, plan, mesh: Mesh,
                     start_position: Tuple[int, int]) -> common.Batches:
  """Endless global batches of the plan's sequences with audio, labels checked, with positions."""
  host_batches = pipeline.make_pretrain_iterator(
      config.data, plan, global_batch_size=config.batch_size, seed=config.seed,
      start_position=start_position)
  for b in host_batches:
    check_labels(np.asarray(b['label']), config.data.num_classes, 'training')
    yield (sharding.host_to_global({k: b[k] for k in BATCH_KEYS}, mesh),
           tuple(int(v) for v in b['position']))


def evaluation_batches(config: ml_collections.ConfigDict, plan,
                 mesh: Mesh) -> Iterator[Dict[str, np.ndarray]]:
  """One pass over the eval split: a sequence per video, padding rows with mask False."""
  sharding.check_batch_size(config.eval.batch_size, mesh, 'config.eval.batch_size')
  for b in pipeline.make_plan_eval_iterator(
      config.data, plan, global_batch_size=config.eval.batch_size, seed=config.seed):
    check_labels(np.asarray(b['label'])[np.asarray(b['mask'], bool)], config.data.num_classes,
                 'test')
    yield b


# ------------------------------------------------------------------------------------------------
# The job.
# ------------------------------------------------------------------------------------------------
def build(config: ml_collections.ConfigDict):
  """(the AVBERT objective of config.objective, the classifier network)."""
  if config.objective.name != 'avbert':
    raise ValueError(f'av_finetune needs config.objective.name=avbert (the AVBERT network to '
                     f'fine-tune), got {config.objective.name!r}.')
  pooling = config.eval.get('av_pooling', 'summary')
  if pooling not in POOLINGS:
    raise ValueError(f'config.eval.av_pooling must be one of {POOLINGS}, got {pooling!r}.')
  objective = build_objective(config)
  net = objective.network
  network = AVClassifier(backbone=net.backbone, audio_cnn=net.audio_cnn,
                         transformer=net.transformer, hidden_size=net.hidden_size,
                         num_classes=config.data.num_classes,
                         dropout=config.eval.finetune_dropout, pooling=pooling)
  return objective, network


def init_state(network: AVClassifier, objective, config: ml_collections.ConfigDict,
               num_train_examples: int, mesh: Mesh):
  """The train state (sharded per config.mesh); the encoder from config.init_checkpoint."""
  rng = jax.random.fold_in(jax.random.key(config.seed), 4)
  v, (t, h) = objective.num_clips, (objective.plan.views[0].num_frames,
                                    objective.plan.views[0].size)
  clips = jnp.zeros((1, v, t, h, h, 3), jnp.float32)
  spectrograms = jnp.zeros((1, v, avbert.mel_frames(config), objective.mel['n_mels']))

  def init(rng):
    variables = network.init({'params': rng, 'dropout': rng}, clips, spectrograms, train=False)
    return variables['params'], variables.get('batch_stats', {})

  abstract_params, _ = jax.eval_shape(init, rng)
  schedule, tx, num_steps = common.schedule_and_optimizer(config, num_train_examples,
                                                          abstract_params)

  def make_state(params, batch_stats):
    return run_utils.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                batch_stats=batch_stats, aux={}, opt_state=tx.init(params))

  abstract = jax.eval_shape(lambda r: make_state(*init(r)), rng)
  shardings = sharding.state_shardings(abstract, mesh, config.mesh.fsdp_min_size)
  if not config.init_checkpoint:
    logging.info('AVBERT encoder: random initialisation.')
    return (jax.jit(lambda r: make_state(*init(r)), out_shardings=shardings)(rng), shardings, tx,
            schedule, num_steps)
  part = lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s)
  target = {collection: {p: jax.tree.map(part, getattr(abstract, collection)[p],
                                         getattr(shardings, collection)[p])
                         for p in ENCODER_PARTS if p in getattr(abstract, collection)}
            for collection in ('params', 'batch_stats')}
  encoder = restore_encoder(config.init_checkpoint, target)

  def with_encoder(rng, encoder):
    # Only the new classifier is initialised (initialising the whole network would compile the
    # encoders' initialisers just to discard their output).
    classifier = models.LinearClassifier(network.num_classes).init(
        rng, jnp.zeros((1, 2 * network.hidden_size), jnp.float32))['params']
    return make_state(dict(encoder['params'], classifier=classifier), encoder['batch_stats'])

  state = jax.jit(with_encoder, out_shardings=shardings)(rng, encoder)
  logging.info('AVBERT encoder from %s.', config.init_checkpoint)
  return state, shardings, tx, schedule, num_steps


def make_train_step(network: AVClassifier, objective, tx, schedule,
                    config: ml_collections.ConfigDict):
  """state, global batch -> state, metrics: cross-entropy on the joint summary tokens."""
  base_key = jax.random.fold_in(jax.random.key(config.seed), 5)
  dropout_key = jax.random.fold_in(jax.random.key(config.seed), 6)

  def step_fn(state, batch):
    keys = augment.example_keys(base_key, batch['key'])
    clips = augment.augment_batch(keys, batch['video'], objective.plan.augment_policies)
    step_key = jax.random.fold_in(dropout_key, state.step)
    spectrograms = objective.spectrograms(batch['audio'], jax.random.fold_in(step_key, 1),
                                          train=True)
    labels = batch['label']

    def loss_fn(params):
      logits, updates = network.apply(
          {'params': params, 'batch_stats': state.batch_stats}, clips, spectrograms, train=True,
          rngs={'dropout': step_key}, mutable=['batch_stats'])
      loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
      return loss, (logits, updates['batch_stats'])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              batch_stats=batch_stats, opt_state=opt_state)
    metrics = {'loss': loss, 'train_top1': jnp.mean(jnp.argmax(logits, -1) == labels),
               'learning_rate': schedule(state.step)}
    return new_state, metrics
  return step_fn


def write_predictions(workdir: str, outputs: Mapping[str, np.ndarray]) -> None:
  """WORKDIR/predictions.npz: per test video 'scores' [N, classes] and 'label' [N] (process 0)."""
  if jax.process_index() != 0:
    return
  buffer = io.BytesIO()
  np.savez(buffer, scores=outputs['scores'], label=outputs['label'])
  with epath.Path(paths.join(workdir, PREDICTIONS_FILE)).open('wb') as f:
    f.write(buffer.getvalue())


def av_finetune(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  """Fine-tunes config.init_checkpoint's AVBERT network with a classifier, then tests it."""
  mesh = common.start_job(config, workdir)
  objective, network = build(config)
  check_data(config, objective.plan)
  if config.init_checkpoint:
    check_architecture(_pretraining_config(config.init_checkpoint), config,
                       config.init_checkpoint)
  num_train = sources.num_examples(config.data, 'train')
  state, shardings, tx, schedule, num_steps = init_state(network, objective, config, num_train,
                                                         mesh)
  jitted = jax.jit(make_train_step(network, objective, tx, schedule, config), donate_argnums=0,
                   out_shardings=(shardings, sharding.replicated(mesh)))
  logging.info('AV fine-tuning: %d steps of %d videos (%d clips each, with sound) on %d '
               'training videos.', num_steps, config.batch_size, objective.num_clips, num_train)
  state, train_metrics, finished = common.train_loop(
      jitted, state, lambda position: training_batches(config, objective.plan, mesh, position),
      num_steps, config=config, workdir=workdir, writer=common.metric_writer(workdir),
      examples_per_step=config.batch_size, name='av_finetune')
  if not finished:  # stopped by SIGTERM: the same command resumes; results.json comes at the end
    return {'finished': False}

  plan = evaluation_plan(objective.plan)

  def logits_fn(variables, video, audio):
    spectrograms = objective.spectrograms(audio, None, train=False)
    logits = network.apply(variables, augment.to_float(video), spectrograms, train=False)
    return logits[:, None]  # one view: the whole sequence

  evaluator = common.ClassifierEvaluator(
      logits_fn, config, mesh, prefix='av_finetune', input_keys=('video', 'audio'),
      batches_fn=lambda: evaluation_batches(config, plan, mesh),
      description='one sequence per video', keep_scores=True)
  results = dict(evaluator.run({'params': state.params, 'batch_stats': state.batch_stats}))
  results['av_finetune/train_loss'] = train_metrics['loss']
  results['av_finetune/train_top1'] = train_metrics['train_top1']
  write_predictions(workdir, evaluator.outputs)
  common.log_results(config.job, results)
  common.write_results(workdir, results)
  return results
