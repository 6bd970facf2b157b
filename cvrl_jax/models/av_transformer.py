"""The parameter-efficient multimodal Transformer of the audio-visual method (Lee et al. 2021).

Both CNNs' clip embeddings (`CNNAdaptor`: Linear to the hidden size, LayerNorm) go through three
passes of one Transformer (mid fusion):

  visual pass  [summary_v, v_1..v_S]           positions 0..S,            weight group 0
  audio pass   [summary_a, a_1..a_S]           positions 0..S,            weight group 1
  joint pass   [visual pass out ; audio out]   positions 0..S per half,   weight group 2
                                               + type embedding (0 visual, 1 audio)

Each pass has its own position embeddings and embedding LayerNorm (the joint one also the type
embeddings), and each modality a learned summary token prepended to its sequence; the summary
outputs (index 0 of each half) are the sequence-level embeddings.

Parameter efficiency, as in the authors' released code (docs/architecture.md, "Audio-visual
models"):

- one BERT layer (post-LayerNorm, GELU) is applied `num_layers` times (`share_layers`) and the same
  layer serves the visual, audio and joint passes (`share_modalities`);
- every projection of that layer (query, key, value, attention output, FFN in, FFN out) is a
  `FactorisedDense`: y = normalise(x A_g) Q_g B + b, with A_g [in, rank] and Q_g [rank, rank]
  specific to the pass's weight group g, B [rank, out] and b shared by all passes. The L2
  normalisation of x A_g follows the authors' code. LayerNorm parameters are shared.
- Q_g is orthogonal by construction: Q_g = expm(W - W^T) with W the strictly upper triangle of an
  unconstrained [rank, rank] parameter. The exponential of a skew-symmetric matrix is a rotation,
  so any gradient step on W keeps Q_g orthogonal (no projection or penalty to tune). This is the
  authors' configuration (their ORTHOGONAL_MODE 'static' uses the matrix exponential of expRNN's
  trivialisation); a Cayley transform would need a solve and cannot reach rotations with
  eigenvalue -1. W starts as expRNN's 'cayley' initialisation: 2x2 rotation blocks with angles
  uniform in [0, pi/2).

With `factorised=False, share_layers=False, share_modalities=False` the same module is an ordinary
Transformer per pass (three stacks of `num_layers` dense layers): the baseline of the parameter
count (bench/av_params.py).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cvrl_jax.models import resnet3d
from cvrl_jax.models.heads import l2_normalize

VISUAL, AUDIO, JOINT = 0, 1, 2
MODALITIES = {'visual': VISUAL, 'audio': AUDIO}
NUM_GROUPS = 3
LAYER_NORM_EPS = 1e-12  # BERT's, as in the authors' configs
PROJECTIONS = ('query', 'key', 'value', 'attention_output', 'ffn_in', 'ffn_out')

bert_init = nn.initializers.normal(0.02)  # BERT's initializer_range


def skew_symmetric(w: jax.Array) -> jax.Array:
  """W's strict upper triangle minus its transpose, over the last two axes."""
  upper = jnp.triu(w, k=1)
  return upper - jnp.swapaxes(upper, -1, -2)


MAX_SQUARINGS = 16
TAYLOR_ORDER = 12


def expm(a: jax.Array) -> jax.Array:
  """Matrix exponential of a [r, r] by scaling and squaring a Taylor polynomial.

  a is scaled by 2^-s so that its 1-norm is at most 1/2 (s <= MAX_SQUARINGS), the order-12 Taylor
  polynomial (truncation error below 1e-13 there) is evaluated by Horner's rule and squared s
  times. The squarings are a fixed-length scan that skips the unneeded ones, so the whole thing is
  plain matrix products: cheap to compile and to differentiate, unlike the branching Pade
  implementation of jax.scipy.linalg.expm (tests compare the two and SciPy's).
  """
  norm = jax.lax.stop_gradient(jnp.max(jnp.sum(jnp.abs(a), axis=-2)))
  s = jnp.clip(jnp.ceil(jnp.log2(jnp.maximum(norm, 1e-30) / 0.5)), 0, MAX_SQUARINGS)
  a = a / (2.0 ** s)
  eye = jnp.eye(a.shape[-1], dtype=a.dtype)
  e = eye
  for k in range(TAYLOR_ORDER, 0, -1):
    e = eye + (a @ e) / k

  def square(e, i):
    return jnp.where(i < s, e @ e, e), None

  return jax.lax.scan(square, e, jnp.arange(MAX_SQUARINGS))[0]


def _polish(q: jax.Array) -> jax.Array:
  """One Newton-Schulz step towards the nearest orthogonal matrix: Q (3I - Q^T Q) / 2.

  The exponential is exactly orthogonal; in float32 each squaring roughly doubles the rounding
  error (about 2e-5 off I after 6 squarings at r = 128). The step squares that error away (the
  correction is quadratic in it), so Q^T Q = I to float32 rounding whatever the parameter's norm.
  """
  eye = jnp.eye(q.shape[-1], dtype=q.dtype)
  return q @ (3.0 * eye - jnp.swapaxes(q, -1, -2) @ q) / 2.0


def orthogonal(w: jax.Array) -> jax.Array:
  """expm(skew_symmetric(w)) for w [..., r, r]: orthogonal (a rotation) for every w."""
  skew = skew_symmetric(w.astype(jnp.float32))
  flat = skew.reshape((-1,) + skew.shape[-2:])
  return _polish(jax.vmap(expm)(flat)).reshape(skew.shape)


def cayley_rotation_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  """expRNN's 'cayley' init for [..., r, r]: upper entries (2i, 2i+1) = -tan(theta_i / 2)."""
  *lead, r, r2 = shape
  if r != r2:
    raise ValueError(f'orthogonal parameters must be square, got shape {tuple(shape)}.')
  theta = jax.random.uniform(key, tuple(lead) + (r // 2,), minval=0.0, maxval=np.pi / 2)
  # sqrt((1 - cos) / (1 + cos)) = tan(theta / 2)
  values = -jnp.tan(theta / 2)
  w = jnp.zeros(tuple(lead) + (r, r), dtype)
  rows = np.arange(r // 2) * 2
  return w.at[..., rows, rows + 1].set(values.astype(dtype))


class FactorisedDense(nn.Module):
  """y = l2_normalise(x @ in_proj[g]) @ orthogonal(rotation[g]) @ kernel + bias, g: weight group."""
  features: int
  rank: int
  num_groups: int = NUM_GROUPS
  normalize: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, group: int) -> jax.Array:
    if not 0 <= group < self.num_groups:
      raise ValueError(f'FactorisedDense group must be in [0, {self.num_groups}), got {group}.')
    in_proj = self.param('in_proj', bert_init, (self.num_groups, x.shape[-1], self.rank))
    rotation = self.param('rotation', cayley_rotation_init,
                          (self.num_groups, self.rank, self.rank))
    kernel = self.param('kernel', bert_init, (self.rank, self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    h = x.astype(self.dtype) @ in_proj[group].astype(self.dtype)
    if self.normalize:
      h = l2_normalize(h.astype(jnp.float32)).astype(self.dtype)
    h = h @ orthogonal(rotation[group]).astype(self.dtype)
    return h @ kernel.astype(self.dtype) + bias.astype(self.dtype)


class GroupDense(nn.Module):
  """nn.Dense with the `(x, group)` signature of FactorisedDense (the group is ignored)."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, group: int) -> jax.Array:
    del group
    return nn.Dense(self.features, dtype=self.dtype, kernel_init=bert_init, name='dense')(x)


class TransformerLayer(nn.Module):
  """A BERT layer (post-LN, GELU) whose six projections are factorised (or dense)."""
  hidden_size: int
  num_heads: int
  ffn_size: int
  rank: int
  factorised: bool = True
  num_groups: int = NUM_GROUPS
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  dtype: Any = jnp.float32

  def _projection(self, name: str, features: int) -> nn.Module:
    if self.factorised:
      return FactorisedDense(features, self.rank, self.num_groups, dtype=self.dtype, name=name)
    return GroupDense(features, dtype=self.dtype, name=name)

  @nn.compact
  def __call__(self, x: jax.Array, group: int, deterministic: bool) -> jax.Array:
    n, s, h = x.shape
    d = h // self.num_heads
    heads = lambda y: y.reshape(n, s, self.num_heads, d)
    q = heads(self._projection('query', h)(x, group))
    k = heads(self._projection('key', h)(x, group))
    v = heads(self._projection('value', h)(x, group))
    logits = jnp.einsum('nqhd,nkhd->nhqk', q, k).astype(jnp.float32) / np.sqrt(d)
    probs = nn.Dropout(self.attention_dropout)(jax.nn.softmax(logits, axis=-1), deterministic)
    context = jnp.einsum('nhqk,nkhd->nqhd', probs.astype(self.dtype), v).reshape(n, s, h)
    y = self._projection('attention_output', h)(context, group)
    y = nn.Dropout(self.hidden_dropout)(y, deterministic)
    x = nn.LayerNorm(LAYER_NORM_EPS, dtype=self.dtype, name='attention_norm')(x + y)
    y = nn.gelu(self._projection('ffn_in', self.ffn_size)(x, group), approximate=False)
    y = self._projection('ffn_out', h)(y, group)
    y = nn.Dropout(self.hidden_dropout)(y, deterministic)
    return nn.LayerNorm(LAYER_NORM_EPS, dtype=self.dtype, name='ffn_norm')(x + y)


class Encoder(nn.Module):
  """`num_layers` applications of one shared layer, or of `num_layers` distinct layers."""
  num_layers: int
  share_layers: bool
  layer_kwargs: Any

  def setup(self):
    count = 1 if self.share_layers else self.num_layers
    self.layers = [TransformerLayer(**self.layer_kwargs, name=f'layer{i}') for i in range(count)]

  def __call__(self, x: jax.Array, group: int, deterministic: bool) -> jax.Array:
    for i in range(self.num_layers):
      x = self.layers[0 if self.share_layers else i](x, group, deterministic)
    return x


class Embeddings(nn.Module):
  """Inputs + position embeddings (+ type embeddings), LayerNorm, dropout."""
  num_positions: int
  use_types: bool
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array, types: jax.Array | None,
               deterministic: bool) -> jax.Array:
    h = x.shape[-1]
    x = x + nn.Embed(self.num_positions, h, embedding_init=bert_init, name='position')(positions)
    if self.use_types:
      x = x + nn.Embed(len(MODALITIES), h, embedding_init=bert_init, name='type')(types)
    x = nn.LayerNorm(LAYER_NORM_EPS, dtype=self.dtype, name='norm')(x)
    return nn.Dropout(self.dropout)(x, deterministic)


class CNNAdaptor(nn.Module):
  """CNN features [..., C] -> Linear(hidden_size) -> LayerNorm: clip embeddings [..., hidden]."""
  hidden_size: int = 768
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    x = nn.Dense(self.hidden_size, dtype=self.dtype, kernel_init=bert_init, name='dense')(features)
    return nn.LayerNorm(LAYER_NORM_EPS, dtype=self.dtype, name='norm')(x).astype(jnp.float32)


def visual_cnn(width_multiplier: float = 1.0, dtype: Any = jnp.float32,
               conv_impl: str = 'auto') -> resnet3d.ResNet3D:
  """The visual CNN: R3D-50, stem (5, 7, 7) stride (2, 2, 2), block temporal kernels 1, 1, 3, 3.

  That is the project's bottleneck R3D as it stands (CVRL uses the same temporal kernels); its
  2048-d pooled features go through a `CNNAdaptor`.
  """
  return resnet3d.ResNet3D(depth=50, width_multiplier=width_multiplier, stem_temporal_kernel=5,
                           stem_temporal_stride=2, dtype=dtype, conv_impl=conv_impl)


class MultimodalTransformer(nn.Module):
  """Visual and audio clip-embedding sequences [N, S, H] -> visual, audio and joint pass outputs."""
  hidden_size: int = 768
  num_heads: int = 12
  ffn_size: int = 3072
  num_layers: int = 6
  rank: int = 128
  max_clips: int = 10
  factorised: bool = True
  share_layers: bool = True
  share_modalities: bool = True
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  dtype: Any = jnp.float32

  def setup(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(f'hidden_size ({self.hidden_size}) must be a multiple of num_heads '
                       f'({self.num_heads}).')
    if self.factorised and not 0 < self.rank <= self.hidden_size:
      raise ValueError(f'rank must be in [1, hidden_size={self.hidden_size}], got {self.rank}.')
    layer_kwargs = dict(
        hidden_size=self.hidden_size, num_heads=self.num_heads, ffn_size=self.ffn_size,
        rank=self.rank, factorised=self.factorised,
        num_groups=NUM_GROUPS if self.share_modalities else 1,
        hidden_dropout=self.hidden_dropout, attention_dropout=self.attention_dropout,
        dtype=self.dtype)
    stack = lambda name: Encoder(self.num_layers, self.share_layers, layer_kwargs, name=name)
    if self.share_modalities:
      self.encoder = stack('encoder')
    else:
      self.encoders = [stack(f'encoder_{name}') for name in ('visual', 'audio', 'joint')]
    self.summary_tokens = self.param('summary_tokens', bert_init,
                                     (len(MODALITIES), self.hidden_size))
    embed = lambda use_types, name: Embeddings(1 + self.max_clips, use_types, self.hidden_dropout,
                                               self.dtype, name=name)
    self.embeddings = [embed(False, 'visual_embeddings'), embed(False, 'audio_embeddings'),
                       embed(True, 'joint_embeddings')]

  def _encode(self, x: jax.Array, group: int, deterministic: bool) -> jax.Array:
    if self.share_modalities:
      return self.encoder(x, group, deterministic)
    return self.encoders[group](x, 0, deterministic)

  def _check_sequence(self, x: jax.Array, name: str):
    if x.ndim != 3 or x.shape[-1] != self.hidden_size:
      raise ValueError(f'{name} must be clip embeddings [N, S, {self.hidden_size}], got shape '
                       f'{x.shape}.')
    if x.shape[1] > self.max_clips:
      raise ValueError(f'{name} has {x.shape[1]} clips, more than max_clips={self.max_clips}.')

  def encode_modality(self, x: jax.Array, modality: str, deterministic: bool = True) -> jax.Array:
    """The visual or audio pass: [N, S, H] -> [N, 1 + S, H] (index 0: the summary token)."""
    if modality not in MODALITIES:
      raise ValueError(f'modality must be one of {sorted(MODALITIES)}, got {modality!r}.')
    self._check_sequence(x, modality)
    group = MODALITIES[modality]
    n, s, _ = x.shape
    summary = jnp.broadcast_to(self.summary_tokens[group], (n, 1, self.hidden_size))
    x = jnp.concatenate([summary, x.astype(jnp.float32)], axis=1)
    x = self.embeddings[group](x, jnp.arange(1 + s)[None], None, deterministic)
    return self._encode(x, group, deterministic).astype(jnp.float32)

  def fuse(self, visual_out: jax.Array, audio_out: jax.Array,
           deterministic: bool = True) -> jax.Array:
    """The joint pass over both passes' outputs: [N, 2 + Sv + Sa, H] (visual half first)."""
    sv, sa = visual_out.shape[1], audio_out.shape[1]
    x = jnp.concatenate([visual_out, audio_out], axis=1)
    positions = jnp.concatenate([jnp.arange(sv), jnp.arange(sa)])[None]
    types = jnp.concatenate([jnp.full((sv,), VISUAL), jnp.full((sa,), AUDIO)])[None]
    x = self.embeddings[JOINT](x, positions, types, deterministic)
    return self._encode(x, JOINT, deterministic).astype(jnp.float32)

  def __call__(self, visual: jax.Array, audio: jax.Array,
               deterministic: bool = True) -> dict[str, jax.Array]:
    """{'visual': [N, 1+Sv, H], 'audio': [N, 1+Sa, H], 'joint': [N, 2+Sv+Sa, H]}."""
    visual_out = self.encode_modality(visual, 'visual', deterministic)
    audio_out = self.encode_modality(audio, 'audio', deterministic)
    return {'visual': visual_out, 'audio': audio_out,
            'joint': self.fuse(visual_out, audio_out, deterministic)}


def count_params(tree) -> int:
  """Number of scalars in a parameter tree (arrays or ShapeDtypeStructs)."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
