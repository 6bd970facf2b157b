"""AVBERT, audio-visual pretraining of a parameter-efficient multimodal Transformer (Lee et al.,
ICLR 2021; recipe and the choices the public code leaves open: docs/recipes/avbert.md).

V clips spread over up to `max_span` frames of a video (the 'spread' sampler) with the audio
window aligned with each clip. Per clip: the visual R3D (`backbone`) -> CNNAdaptor; per audio
window: log-mel -> SpecAugment (training) -> audio CNN -> CNNAdaptor. These clip embeddings are the
targets. Per sequence, a fixed number of clips of each modality (round(mask_ratio * V), drawn from
the pretext keys) is replaced by a learned mask token; the masked sequences go through the shared
Transformer's visual, audio and joint passes (models/av_transformer.py).

Loss = visual_mep_weight MEP_v + audio_mep_weight MEP_a + joint_mep_weight MEP_j
       + correspondence_weight AVC:
  MEP  masked-embedding prediction: a head per modality maps the pass's output at each masked
       clip to a prediction; InfoNCE (cosine / temperature) against the clip's true embedding and
       `num_negatives` other clip embeddings of the same modality from the whole global batch,
       drawn without replacement with probability softmax(cos / sampling_temperature) (the
       positive excluded): "content-aware" negatives, similar clips drawn more often. MEP_j is
       the mean of both modalities' predictions from the joint pass.
  AVC  audio-visual correspondence: per example a coin from the pretext keys keeps its own audio
       sequence or takes that of the next batch row; a binary classifier on the joint pass's two
       summary tokens says which (logistic loss).
Targets keep their gradient unless `target_stop_gradient` (docs/recipes/avbert.md says why);
the similarities that draw the negatives never carry one (the draw is discrete).
"""
from typing import Dict, Mapping, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from cvrl_jax import audio as audio_lib
from cvrl_jax import augment
from cvrl_jax import models
from cvrl_jax.data import plan as plan_lib
from cvrl_jax.models import audio_resnet
from cvrl_jax.models import av_transformer
from cvrl_jax.models import resnet3d
from cvrl_jax.objectives import base
from cvrl_jax.objectives import losses

MODALITIES = ('visual', 'audio')
# Salts folded into the pretext keys, one per draw, so the draws are independent.
MASK_SALT = {'visual': 1, 'audio': 2}
NEGATIVE_SALT = {'visual': 3, 'audio': 4}
PAIR_SALT = 5
TERMS = ('visual_mep', 'audio_mep', 'joint_mep', 'correspondence')


# ------------------------------------------------------------------------------------------------
# Draws from the pretext keys.
# ------------------------------------------------------------------------------------------------
def num_masked(num_clips: int, mask_ratio: float) -> int:
  """Clips masked per sequence: round(mask_ratio * num_clips), at least 1."""
  return max(1, int(round(mask_ratio * num_clips)))


def draw_masks(keys: jax.Array, num_clips: int, count: int) -> jax.Array:
  """bool [B, num_clips]: per example `count` distinct masked positions drawn from its key."""
  def one(key):
    chosen = jax.random.permutation(key, num_clips)[:count]
    return jnp.zeros((num_clips,), bool).at[chosen].set(True)
  return jax.vmap(one)(keys)


def draw_partners(keys: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """(matched bool [B], partner int32 [B]): a fair coin per example; a matched example keeps its
  own audio (partner b), a mismatched one takes row (b + 1) mod B's."""
  matched = jax.vmap(lambda k: jax.random.bernoulli(k, 0.5))(keys)
  rows = jnp.arange(keys.shape[0], dtype=jnp.int32)
  return matched, jnp.where(matched, rows, (rows + 1) % keys.shape[0])


def row_keys(keys: jax.Array, num_clips: int) -> jax.Array:
  """[B * num_clips] keys, row b * V + i from example b's key and the clip index i."""
  return jax.vmap(lambda k: jax.vmap(lambda i: jax.random.fold_in(k, i))(
      jnp.arange(num_clips)))(keys).reshape(-1)


def sample_negatives(keys: jax.Array, similarity: jax.Array, positives: jax.Array,
                     num_negatives: int, temperature: float) -> jax.Array:
  """int32 [N, K]: per row n, K distinct columns of similarity [N, M] other than positives[n],
  drawn without replacement with probability proportional to exp(similarity / temperature).

  Gumbel top-k: the K largest of logit + Gumbel noise are a draw without replacement from the
  softmax of the logits (successive sampling), the noise of row n from keys[n].
  """
  m = similarity.shape[1]
  if not 0 < num_negatives < m:
    raise ValueError(f'cannot draw {num_negatives} negatives from {m} candidates less the '
                     'positive')
  logits = jax.lax.stop_gradient(similarity.astype(jnp.float32)) / temperature
  logits = jnp.where(jnp.arange(m)[None] == positives[:, None], -jnp.inf, logits)
  noise = jax.vmap(lambda k: jax.random.gumbel(k, (m,)))(keys)
  return jax.lax.top_k(logits + noise, num_negatives)[1].astype(jnp.int32)


def sampled_info_nce(predictions: jax.Array, candidates: jax.Array, positives: jax.Array,
                     negatives: jax.Array, temperature: float,
                     weights: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """(loss, accuracy): InfoNCE of predictions [N, D] against candidates [M, D], row n's positive
  candidates[positives[n]] and negatives candidates[negatives[n]] (cosine / temperature), the
  weighted mean over rows (weights [N], e.g. the masked clips)."""
  p = losses.l2_normalize(predictions.astype(jnp.float32))
  c = losses.l2_normalize(candidates.astype(jnp.float32))
  positive = jnp.sum(p * c[positives], axis=-1, keepdims=True)
  negative = jnp.einsum('nd,nkd->nk', p, c[negatives])
  logits = jnp.concatenate([positive, negative], axis=1) / temperature
  per_row = jax.nn.logsumexp(logits, axis=1) - logits[:, 0]
  correct = (jnp.argmax(logits, axis=1) == 0).astype(jnp.float32)
  total = jnp.maximum(jnp.sum(weights), 1.0)
  return jnp.sum(per_row * weights) / total, jnp.sum(correct * weights) / total


# ------------------------------------------------------------------------------------------------
# The network.
# ------------------------------------------------------------------------------------------------
class PredictionHead(nn.Module):
  """Dense -> GELU -> LayerNorm -> Dense (BERT's masked-LM transform, to clip embeddings)."""
  hidden_size: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = av_transformer.bert_init
    x = nn.gelu(nn.Dense(self.hidden_size, kernel_init=init, name='transform')(x),
                approximate=False)
    x = nn.LayerNorm(av_transformer.LAYER_NORM_EPS, name='norm')(x)
    return nn.Dense(self.hidden_size, kernel_init=init, name='output')(x)


class CorrespondenceHead(nn.Module):
  """The two summary tokens of the joint pass, concatenated -> Dense -> tanh -> Dense(1)."""
  hidden_size: int

  @nn.compact
  def __call__(self, visual_summary: jax.Array, audio_summary: jax.Array) -> jax.Array:
    x = jnp.concatenate([visual_summary, audio_summary], axis=-1)
    x = jnp.tanh(nn.Dense(self.hidden_size, kernel_init=av_transformer.bert_init,
                          name='pooler')(x))
    return nn.Dense(1, kernel_init=av_transformer.bert_init, name='logit')(x)[..., 0]


class AVBERTNetwork(nn.Module):
  """Clips and spectrograms -> clip embeddings (the targets) and the three passes' outputs."""
  backbone: nn.Module
  audio_cnn: nn.Module
  transformer: av_transformer.MultimodalTransformer
  hidden_size: int

  def setup(self):
    self.visual_adaptor = av_transformer.CNNAdaptor(self.hidden_size)
    self.audio_adaptor = av_transformer.CNNAdaptor(self.hidden_size)
    self.mask_tokens = self.param('mask_tokens', av_transformer.bert_init,
                                  (len(MODALITIES), self.hidden_size))
    self.visual_head = PredictionHead(self.hidden_size)
    self.audio_head = PredictionHead(self.hidden_size)
    self.correspondence_head = CorrespondenceHead(self.hidden_size)

  def __call__(self, clips: jax.Array, spectrograms: jax.Array, masks: Mapping[str, jax.Array],
               partners: jax.Array, train: bool) -> Dict[str, jax.Array]:
    """clips [B, V, T, H, W, 3], spectrograms [B, V, frames, mels], masks bool [B, V] per
    modality, partners int32 [B] (the row whose audio the joint pass pairs with row b)."""
    b, v = clips.shape[:2]
    features = self.backbone(base.merge_views(clips), train=train)
    visual = self.visual_adaptor(features).reshape(b, v, -1)
    sounds = self.audio_cnn(base.merge_views(spectrograms)[..., None], train=train)
    audio = self.audio_adaptor(sounds).reshape(b, v, -1)
    masked = lambda x, mask, i: jnp.where(mask[..., None], self.mask_tokens[i], x)
    deterministic = not train
    visual_out = self.transformer.encode_modality(masked(visual, masks['visual'], 0), 'visual',
                                                  deterministic)
    audio_out = self.transformer.encode_modality(masked(audio, masks['audio'], 1), 'audio',
                                                 deterministic)
    joint = self.transformer.fuse(visual_out, audio_out[partners], deterministic)
    return {
        'targets_visual': visual, 'targets_audio': audio,
        'visual': self.visual_head(visual_out[:, 1:]),
        'audio': self.audio_head(audio_out[:, 1:]),
        'joint_visual': self.visual_head(joint[:, 1:1 + v]),
        'joint_audio': self.audio_head(joint[:, 2 + v:]),
        'correspondence': self.correspondence_head(joint[:, 0], joint[:, 1 + v]),
    }


# ------------------------------------------------------------------------------------------------
# The objective.
# ------------------------------------------------------------------------------------------------
def _positive(oc, key: str, cast=float):
  value = cast(oc[key])
  if not value > 0:
    raise ValueError(f'config.objective.{key} must be positive, got {oc[key]!r}')
  return value


def _audio_cnn(oc, model_cfg) -> audio_resnet.AudioResNet:
  """The audio CNN of config.objective: separable first two stages, every stage strided 2."""
  block_counts = tuple(int(n) for n in oc.audio_block_counts)
  if not block_counts or min(block_counts) < 1:
    raise ValueError(f'config.objective.audio_block_counts must be positive block counts per '
                     f'stage, got {tuple(oc.audio_block_counts)}')
  return audio_resnet.AudioResNet(
      base_width=_positive(oc, 'audio_base_width', int), block_counts=block_counts,
      stage_strides=(2,) * len(block_counts),
      separable_stages=tuple(i < 2 for i in range(len(block_counts))),
      bn_epsilon=model_cfg.bn_epsilon, dtype=resnet3d.DTYPES[model_cfg.dtype])


def _transformer(oc, num_clips: int) -> av_transformer.MultimodalTransformer:
  """The shared multimodal Transformer of config.objective (sequences of num_clips clips)."""
  hidden = _positive(oc, 'hidden_size', int)
  dropout = float(oc.dropout)
  if not 0.0 <= dropout < 1.0:
    raise ValueError(f'config.objective.dropout must be in [0, 1), got {oc.dropout!r}')
  transformer = av_transformer.MultimodalTransformer(
      hidden_size=hidden, num_heads=_positive(oc, 'num_heads', int),
      ffn_size=_positive(oc, 'ffn_size', int), num_layers=_positive(oc, 'num_layers', int),
      rank=_positive(oc, 'rank', int), max_clips=num_clips, hidden_dropout=dropout,
      attention_dropout=dropout)
  if hidden % transformer.num_heads or transformer.rank > hidden:
    raise ValueError(f'config.objective.hidden_size={hidden} must be a multiple of num_heads='
                     f'{transformer.num_heads} and at least rank={transformer.rank}')
  return transformer


class AVBERT(base.Objective):
  """Masked-embedding prediction with content-aware negatives plus audio-visual correspondence.

  aux = {}. config.objective: num_clips, clip_frames, clip_stride, max_span, augment_policy,
  sample_rate, audio_samples, n_fft, hop_length, n_mels, spec_augment_rate, audio_base_width,
  audio_block_counts, hidden_size, num_heads, ffn_size, num_layers, rank, dropout, mask_ratio,
  num_negatives, temperature, sampling_temperature, target_stop_gradient, visual_mep_weight,
  audio_mep_weight, joint_mep_weight, correspondence_weight (docs/recipes/avbert.md).
  """

  def __init__(self, config: ml_collections.ConfigDict):
    oc = config.objective
    self._read_loss_keys(oc, config.batch_size)
    self._read_audio_keys(oc)
    policy = augment.get_policy(oc.augment_policy)
    view = plan_lib.ViewSpec(oc.augment_policy, num_frames=_positive(oc, 'clip_frames', int),
                             stride=_positive(oc, 'clip_stride', int),
                             crop_area_range=policy.crop_area_range,
                             crop_aspect_range=policy.crop_aspect_range)
    self.plan = plan_lib.ClipPlan(
        sampler='spread', views=(view,) * self.num_clips,
        sampler_params={'max_span': int(oc.max_span)},
        audio=plan_lib.AudioSpec(self.audio_samples, self.mel['sample_rate']))
    transformer = _transformer(oc, self.num_clips)
    self.network = AVBERTNetwork(backbone=models.build_backbone(config.model),
                                 audio_cnn=_audio_cnn(oc, config.model), transformer=transformer,
                                 hidden_size=transformer.hidden_size)

  def _read_loss_keys(self, oc, batch_size: int) -> None:
    """The sequence, masking, negatives, temperatures and weights, validated."""
    self.num_clips = _positive(oc, 'num_clips', int)
    if self.num_clips < 2:
      raise ValueError(f'config.objective.num_clips must be at least 2 (a masked clip needs '
                       f'context), got {self.num_clips}')
    self.mask_ratio = float(oc.mask_ratio)
    if not 0.0 < self.mask_ratio < 1.0:
      raise ValueError(f'config.objective.mask_ratio must be in (0, 1), got {oc.mask_ratio!r}')
    self.num_masked = num_masked(self.num_clips, self.mask_ratio)
    if self.num_masked >= self.num_clips:
      raise ValueError(f'config.objective.mask_ratio={self.mask_ratio} masks all '
                       f'{self.num_clips} clips of a sequence; leave at least one visible')
    self.temperature = _positive(oc, 'temperature')
    self.sampling_temperature = _positive(oc, 'sampling_temperature')
    self.num_negatives = _positive(oc, 'num_negatives', int)
    candidates = batch_size * self.num_clips
    if self.num_negatives >= candidates:
      raise ValueError(f'config.objective.num_negatives={self.num_negatives} must be below the '
                       f'{candidates} clips of a global batch (batch_size x num_clips)')
    if batch_size < 2:
      raise ValueError(f'AVBERT pairs audio with another example of the batch: batch_size must '
                       f'be at least 2, got {batch_size}')
    self.weights = {term: float(oc[f'{term}_weight']) for term in TERMS}
    for term, weight in self.weights.items():
      if weight < 0:
        raise ValueError(f'config.objective.{term}_weight must be >= 0, got {weight}')
    self.target_stop_gradient = bool(oc.target_stop_gradient)

  def _read_audio_keys(self, oc) -> None:
    """The audio window, its log-mel settings and SpecAugment, validated."""
    self.spec_augment_rate = float(oc.spec_augment_rate)
    if not 0.0 <= self.spec_augment_rate < 1.0:
      raise ValueError(f'config.objective.spec_augment_rate must be in [0, 1), got '
                       f'{oc.spec_augment_rate!r}')
    self.mel = {key: _positive(oc, key, int)
                for key in ('sample_rate', 'n_fft', 'hop_length', 'n_mels')}
    try:
      audio_lib.check_parameters(fmin=0.0, fmax=None, **self.mel)
    except ValueError as e:
      raise ValueError(f'config.objective audio settings: {e}') from None
    self.audio_samples = _positive(oc, 'audio_samples', int)
    if self.audio_samples <= self.mel['n_fft'] // 2:
      raise ValueError(f'config.objective.audio_samples={self.audio_samples} is too short for '
                       f'n_fft={self.mel["n_fft"]} (needs more than n_fft / 2)')

  # -- inputs ------------------------------------------------------------------------------------
  def spectrograms(self, waveforms: jax.Array, rng, train: bool) -> jax.Array:
    """[B, V, A] audio windows -> log-mel [B, V, frames, n_mels], SpecAugment when training."""
    spec = audio_lib.log_mel_spectrogram(waveforms.astype(jnp.float32), **self.mel)
    if train and self.spec_augment_rate > 0:
      b, v = spec.shape[:2]
      spec = audio_resnet.spec_augment(rng, spec.reshape((b * v,) + spec.shape[2:]),
                                       self.spec_augment_rate,
                                       self.spec_augment_rate).reshape(spec.shape)
    return spec

  def draws(self, keys: jax.Array) -> Dict[str, jax.Array]:
    """The masks, pairing and negative-sampling keys of a batch, all from the pretext keys."""
    fold = lambda salt: jax.vmap(lambda k: jax.random.fold_in(k, salt))(keys)
    matched, partners = draw_partners(fold(PAIR_SALT))
    out = {'matched': matched, 'partners': partners}
    for m in MODALITIES:
      out[f'mask_{m}'] = draw_masks(fold(MASK_SALT[m]), self.num_clips, self.num_masked)
      out[f'negative_keys_{m}'] = row_keys(fold(NEGATIVE_SALT[m]), self.num_clips)
    return out

  def init(self, rng, clips):
    b = clips.shape[0]
    audio = jnp.zeros((b, self.num_clips, self.plan.audio.num_samples), jnp.float32)
    draws = self.draws(jax.random.split(jax.random.fold_in(rng, 7), b))
    variables = self.network.init(
        {'params': rng, 'dropout': jax.random.fold_in(rng, 1)}, clips,
        self.spectrograms(audio, rng, train=False),
        {m: draws[f'mask_{m}'] for m in MODALITIES}, draws['partners'], train=True)
    params, batch_stats = variables['params'], variables.get('batch_stats', {})
    return params, batch_stats, self.init_aux(rng, params, batch_stats, clips)

  # -- loss --------------------------------------------------------------------------------------
  def mep_term(self, predictions: jax.Array, targets: jax.Array, rows: jax.Array,
               masks: jax.Array, negative_keys: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """(loss, accuracy) of predictions [B, V, H] at the masked clips (masks bool [B, V]): the
    prediction of clip i of row b has the positive targets[rows[b], i] (targets [B, V, H]) and
    content-aware negatives among every other clip of the batch."""
    b, v, h = targets.shape
    candidates = targets.reshape(b * v, h)
    if self.target_stop_gradient:
      candidates = jax.lax.stop_gradient(candidates)
    normed = losses.l2_normalize(jax.lax.stop_gradient(candidates))
    positives = (rows[:, None] * v + jnp.arange(v)[None]).reshape(-1).astype(jnp.int32)
    negatives = sample_negatives(negative_keys, normed[positives] @ normed.T, positives,
                                 self.num_negatives, self.sampling_temperature)
    return sampled_info_nce(predictions.reshape(b * v, h), candidates, positives, negatives,
                            self.temperature, masks.reshape(-1).astype(jnp.float32))

  def terms(self, params, batch_stats, inputs, rng, train: bool = True):
    """({term: loss}, metrics, new batch_stats) of TERMS on one batch."""
    spec_rng, dropout_rng = jax.random.split(rng)
    draws = self.draws(inputs['keys'])
    masks = {m: draws[f'mask_{m}'] for m in MODALITIES}
    out, updates = self.network.apply(
        {'params': params, 'batch_stats': batch_stats}, inputs['clips'],
        self.spectrograms(inputs['audio'], spec_rng, train), masks, draws['partners'],
        train=train, mutable=['batch_stats'], rngs={'dropout': dropout_rng})
    own = jnp.arange(inputs['clips'].shape[0], dtype=jnp.int32)
    partners = draws['partners']
    results, metrics = {}, {}
    for name, modality, rows in (('visual', 'visual', own), ('audio', 'audio', own),
                                 ('joint_visual', 'visual', own),
                                 ('joint_audio', 'audio', partners)):
      results[name], metrics[f'{name}_mep_accuracy'] = self.mep_term(
          out[name], out[f'targets_{modality}'], rows, masks[modality][rows],
          draws[f'negative_keys_{modality}'])
    labels = draws['matched'].astype(jnp.float32)
    logits = out['correspondence'].astype(jnp.float32)
    terms = {'visual_mep': results['visual'], 'audio_mep': results['audio'],
             'joint_mep': 0.5 * (results['joint_visual'] + results['joint_audio']),
             'correspondence': jnp.mean(
                 jnp.logaddexp(0.0, logits) - labels * logits)}  # sigmoid cross-entropy
    metrics['correspondence_accuracy'] = jnp.mean(((logits > 0) == draws['matched'])
                                                  .astype(jnp.float32))
    metrics.update({f'{t}_loss': v for t, v in terms.items()})
    return terms, metrics, updates['batch_stats']

  def loss(self, params, batch_stats, aux, inputs, rng, step) -> base.LossOutput:
    del step
    terms, metrics, new_stats = self.terms(params, batch_stats, inputs, rng)
    loss = sum(self.weights[t] * terms[t] for t in TERMS)
    return base.LossOutput(loss=loss, batch_stats=new_stats, aux=aux, metrics=metrics)


def mel_frames(config: ml_collections.ConfigDict) -> int:
  """Spectrogram frames of one audio window of config.objective (audio.num_frames, centred)."""
  oc = config.objective
  return audio_lib.num_frames(int(oc.audio_samples), n_fft=int(oc.n_fft),
                              hop_length=int(oc.hop_length))

