"""The compiled train step over 8 devices communicates what data parallelism needs, and no more.

Expected figures come from the state tree and the config (bench/collectives.py:expected_bytes):
gradients = the trainable parameters, synced BN = 4 float32 per BN channel, the contrastive
negatives = the projections of the global batch. The measured ones are parsed from the optimised
HLO of the step (bench/collectives.py:parse_collectives, checked here on a hand-written module).
"""
import collections
import importlib.util
import os

import jax
import pytest

from cvrl_jax import config_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    'bench_collectives', os.path.join(REPO_ROOT, 'bench', 'collectives.py'))
collectives_lib = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(collectives_lib)

NUM_DEVICES = 8
SLACK_BYTES = 1024  # scalar metrics (loss, accuracy, norms) and their partial sums

HLO = """
HloModule m
%add { ROOT %a = f32[] add(f32[] %x, f32[] %y) }
ENTRY %main {
  %all-reduce.1 = (f32[8]{0}, bf16[2,3]{1,0}) all-reduce(%p0, %p1), metadata={op_name="jvp(N)/bn"}
  %all-gather-start = (f32[4,16]{1,0}, f32[32,16]{1,0}) all-gather-start(%p2), dimensions={0}
  %all-gather-done = f32[32,16]{1,0} all-gather-done(%ags), metadata={op_name="transpose(jvp(N))"}
  %reduce-scatter = f32[2,5]{1,0} reduce-scatter(%p3), channel_id=3, dimensions={0}, to_apply=%add
  %all-to-all = (u8[1,7]{1,0}, u8[1,7]{1,0}) all-to-all(%p4, %p5), channel_id=4
  %collective-permute-done = s32[3]{0} collective-permute-done(%cp-start)
  ROOT %fusion = f32[8]{0} fusion(%all-reduce.1), kind=kLoop, calls=%fused
}
"""


def test_parser_counts_each_collective_once_with_its_result_bytes():
  found = collectives_lib.parse_collectives(HLO)
  assert [(c.kind, c.bytes) for c in found] == [
      ('all-reduce', 8 * 4 + 6 * 2),
      ('all-gather', 32 * 16 * 4),  # the -done op only, not its -start
      ('reduce-scatter', 10 * 4),
      ('all-to-all', 2 * 7),
      ('collective-permute', 3 * 4),
  ]
  assert [c.phase for c in found[:2]] == ['forward', 'backward']


def tiny_config():
  c = config_lib.base_config()
  with c.unlocked():
    c.model.depth = 18
    c.model.width_multiplier = 0.125
    c.model.dtype = 'float32'
    c.model.conv_impl = 'conv3d'
    c.data.num_frames = 4
    c.data.image_size = 16
    c.batch_size = NUM_DEVICES
    c.mesh.data = NUM_DEVICES
    c.objective.head_hidden_dim = 32
    c.objective.head_output_dim = 16
  return c


@pytest.fixture(scope='module')
def audit():
  """(collectives, expected bytes, abstract parameters) of the tiny CVRL step on 8 devices."""
  found, expected, parts = collectives_lib.audit(tiny_config(), NUM_DEVICES)
  return found, expected, parts.abstract_state.params


def _total(found, kind):
  return sum(c.bytes for c in found if c.kind == kind)


def test_gradients_and_bn_statistics_are_all_reduced_and_nothing_else(audit):
  found, expected, params = audit
  total = _total(found, 'all-reduce')
  bn = expected['bn_forward'] + expected['bn_backward']
  # Every gradient is summed over devices once (combining several into one op is fine) ...
  assert total >= expected['gradients']
  # ... and besides the gradients only per-channel BN sums, the gradient of the gathered
  # projections (one reduction per gathered copy, at most two per view) and scalars.
  assert total <= expected['gradients'] + bn + 2 * expected['embeddings'] + SLACK_BYTES
  # Each trainable parameter's gradient is one all-reduced buffer of its shape (up to a
  # transposition: XLA may reduce a dense kernel's gradient in the layout the dot produced).
  reduced = collections.Counter(tuple(sorted(shape)) for c in found if c.kind == 'all-reduce'
                                for dtype, shape in c.buffers if dtype == 'f32')
  shapes = collections.Counter(tuple(sorted(x.shape)) for x in jax.tree.leaves(params))
  assert not shapes - reduced, f'gradients not all-reduced: {shapes - reduced}'


def test_only_the_projections_are_gathered(audit):
  found, expected, _ = audit
  gathers = [c for c in found if c.kind == 'all-gather']
  too_big = [(c.name, c.buffers, c.op_name[:80]) for c in gathers
             if c.bytes > expected['embeddings']]
  assert not too_big, f'activations gathered onto every device: {too_big}'
  # The contrastive loss sees the negatives of the whole global batch.
  assert _total(found, 'all-gather') >= expected['embeddings']


def test_no_resharding_collectives(audit):
  found, _, _ = audit
  for kind in ('all-to-all', 'collective-permute'):
    assert _total(found, kind) == 0, [c.op_name[:80] for c in found if c.kind == kind]
