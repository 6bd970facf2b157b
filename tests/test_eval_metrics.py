"""Multi-view aggregation, top-k, kNN voting and retrieval against hand-computed / NumPy answers."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import eval_numpy
from cvrl_jax import models
from cvrl_jax import sharding
from cvrl_jax.evaluate import knn
from cvrl_jax.evaluate import views


@pytest.fixture(scope='module')
def mesh():
  return sharding.make_mesh(ml_collections.ConfigDict({'data': -1, 'fsdp': 1}))


def test_view_average_matches_hand_computed_case():
  # Logits = log(p) + a per-view constant, so softmax gives back p exactly for each view.
  probs = np.array([
      [[0.98, 0.01, 0.01], [0.3, 0.4, 0.3], [0.3, 0.4, 0.3]],  # one confident view wins
      [[0.2, 0.2, 0.6], [0.2, 0.2, 0.6], [0.5, 0.25, 0.25]],
  ])
  logits = np.log(probs) + np.array([3.0, -7.0, 0.5])[None, :, None]
  averaged = np.asarray(views.average_view_probabilities(jnp.asarray(logits)))
  np.testing.assert_allclose(
      averaged, [[1.58 / 3, 0.81 / 3, 0.61 / 3], [0.9 / 3, 0.65 / 3, 1.45 / 3]], rtol=1e-6)
  # The confident view decides video 0 although 2 of 3 views (and a majority vote) say class 1.
  np.testing.assert_array_equal(np.argmax(averaged, axis=1), [0, 2])


def test_thirty_view_average_and_topk():
  # 10 temporal x 3 spatial views: 29 views mildly prefer class 2, one view is sure of class 0,
  # which tips the average to class 0 (29 * 0.38 + 1 > 29 * 0.41).
  mild = np.log([0.38, 0.21, 0.41, 1e-12])
  sure = np.log([1.0 - 3e-12, 1e-12, 1e-12, 1e-12])
  logits = np.stack([mild] * 29 + [sure])[None]
  averaged = np.asarray(views.average_view_probabilities(jnp.asarray(logits)))[0]
  np.testing.assert_allclose(averaged, [(29 * 0.38 + 1) / 30, 29 * 0.21 / 30, 29 * 0.41 / 30, 0.0],
                             atol=1e-6)
  correct = views.topk_correct(jnp.asarray(averaged[None]), jnp.array([2]), (1, 2, 3))
  assert [bool(correct[k][0]) for k in (1, 2, 3)] == [False, True, True]


def test_topk_breaks_ties_against_the_label():
  scores = jnp.array([[1.0, 1.0, 0.0], [0.2, 0.5, 0.3]])
  correct = views.topk_correct(scores, jnp.array([1, 2]), (1, 2))
  np.testing.assert_array_equal(correct[1], [False, False])
  np.testing.assert_array_equal(correct[2], [True, True])


def test_topk_never_counts_a_label_outside_the_classes():
  """Issue 18.1: labels 7 and -1 (no label) on 3 classes were top-1 hits (NaN gather, wrap)."""
  scores = jnp.array([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]])
  correct = views.topk_correct(scores, jnp.array([7, -1, 3, 0]), (1, 3, 5))
  for k in (1, 3, 5):
    np.testing.assert_array_equal(correct[k], [False, False, False, True])
  np.testing.assert_array_equal(views.label_rank(scores, jnp.array([7, -1, 2, 1])),
                                [views.INVALID_RANK] * 2 + [0, 1])


def test_retrieval_never_matches_missing_labels():
  hits = knn.retrieval_hits(jnp.array([[-1, -1], [2, -1]]), jnp.array([-1, 2]), (1, 2))
  assert {k: np.asarray(v).tolist() for k, v in hits.items()} == {1: [False, True],
                                                                  2: [False, True]}


def test_knn_vote_matches_numpy():
  rng = np.random.default_rng(0)
  query, bank = rng.normal(size=(9, 8)), rng.normal(size=(50, 8))
  bank_labels = rng.integers(0, 4, size=50)
  sims, labels = knn.nearest_neighbours(
      models.l2_normalize(jnp.asarray(query, jnp.float32)),
      models.l2_normalize(jnp.asarray(bank, jnp.float32)),
      jnp.asarray(bank_labels), 20)
  scores = np.asarray(knn.knn_vote(sims, labels, 4, temperature=0.07))
  np.testing.assert_allclose(scores, eval_numpy.knn_scores(query, bank, bank_labels, 4, 20, 0.07),
                             rtol=1e-4)


def test_memory_bank_accuracy_matches_numpy(mesh):
  rng = np.random.default_rng(1)
  num_classes, dim = 5, 16
  centres = rng.normal(size=(num_classes, dim))
  bank_labels = rng.integers(0, num_classes, size=300)
  bank = centres[bank_labels] + 1.5 * rng.normal(size=(300, dim))
  query_labels = rng.integers(0, num_classes, size=37)  # not a multiple of the chunk: padding
  query = centres[query_labels] + 1.5 * rng.normal(size=(37, dim))

  memory = knn.MemoryBank(bank, bank_labels, mesh, num_classes=num_classes, k=200,
                          temperature=0.07, queries_per_device=2)
  result = memory.evaluate(query, query_labels)

  assert result['knn/top1'] == pytest.approx(eval_numpy.knn_top1(
      query, query_labels, bank, bank_labels, num_classes, 200, 0.07))
  assert result['knn/top5'] == pytest.approx(1.0)  # 5 classes
  expected = eval_numpy.retrieval(query, query_labels, bank, bank_labels, knn.RETRIEVAL_KS)
  for k in knn.RETRIEVAL_KS:
    assert result[f'retrieval/top{k}'] == pytest.approx(expected[k]), k
  # The clusters overlap: the answers are neither trivial nor chance.
  assert 0.3 < result['knn/top1'] < 1.0 and result['retrieval/top1'] < result['retrieval/top5']


def test_retrieval_hits_hand_case_and_small_bank(mesh):
  hits = knn.retrieval_hits(jnp.array([[3, 1, 2], [0, 0, 0]]), jnp.array([2, 0]), (1, 2, 3, 50))
  assert {k: np.asarray(v).tolist() for k, v in hits.items()} == {
      1: [False, True], 2: [False, True], 3: [True, True], 50: [True, True]}
  # A bank smaller than k: every bank row votes, nothing fails.
  memory = knn.MemoryBank(np.eye(3), np.array([0, 1, 2]), mesh, num_classes=3)
  result = memory.evaluate(np.eye(3) + 0.1, np.array([0, 1, 2]))
  assert result['knn/top1'] == 1.0 and result['retrieval/top1'] == 1.0


def test_memory_bank_rejects_bad_input(mesh):
  with pytest.raises(ValueError, match='empty'):
    knn.MemoryBank(np.zeros((0, 4)), np.zeros((0,)), mesh, num_classes=2)
  memory = knn.MemoryBank(np.ones((4, 4)), np.zeros(4), mesh, num_classes=2)
  with pytest.raises(ValueError, match=r'\[Q, 4\]'):
    memory.evaluate(np.ones((2, 3)), np.zeros(2))
