"""The demo's report image (cvrl_jax/report.py): TensorBoard scalars read back (cvrl_jax/events.py), nearest training
videos, query choice, and the PNG itself."""
import numpy as np
from clu import metric_writers
from PIL import Image

from cvrl_jax import events
from cvrl_jax import report


def test_read_scalars_reads_what_clu_writes(tmp_path):
  writer = metric_writers.SummaryWriter(str(tmp_path))
  for step, loss in ((10, 8.25), (20, 7.5), (30, 6.0)):
    writer.write_scalars(step, {'train/loss': loss, 'train/contrastive_accuracy': step / 100})
  writer.write_scalars(30, {'monitor/knn_top1': 0.42})
  writer.write_scalars(20, {'train/loss': 7.25})  # a resumed run rewrites step 20: last wins
  writer.flush()
  writer.close()
  scalars = events.read_scalars(str(tmp_path))
  steps, values = scalars['train/loss']
  assert steps.tolist() == [10, 20, 30]
  np.testing.assert_allclose(values, [8.25, 7.25, 6.0])
  np.testing.assert_allclose(scalars['train/contrastive_accuracy'][1], [0.1, 0.2, 0.3], rtol=1e-6)
  assert scalars['monitor/knn_top1'][0].tolist() == [30]


def test_nearest_training_videos_match_a_brute_force_search():
  rng = np.random.default_rng(0)
  bank, queries = rng.normal(size=(50, 8)), rng.normal(size=(6, 8))
  got = report.nearest_training_videos(bank, queries, 4)
  for q, row in zip(queries, got):
    cosine = [float(q @ b / np.linalg.norm(q) / np.linalg.norm(b)) for b in bank]
    assert row.tolist() == sorted(range(50), key=lambda i: -cosine[i])[:4]
  # Scaling a bank row does not change cosine neighbours.
  scaled = bank.copy()
  scaled[got[0, 0]] *= 100.0
  assert np.array_equal(report.nearest_training_videos(scaled, queries, 4), got)


def test_pick_queries_prefers_distinct_classes():
  labels = np.array([0, 0, 0, 1, 1, 2, 0, 0])
  chosen = report.pick_queries(labels, 3, seed=0)
  assert sorted(labels[chosen].tolist()) == [0, 1, 2]
  more = report.pick_queries(labels, 5, seed=0)
  assert len(set(more)) == 5 and set(chosen) <= set(more)


def _frames(n, value):
  return np.full((n, 8, 8, 3), value, np.uint8)


def test_report_png_has_curves_fractions_and_the_grid(tmp_path):
  steps = np.arange(10, 110, 10)
  scalars = {'train/loss': (steps, np.linspace(8.3, 6.0, 10)),
             'train/contrastive_accuracy': (steps, np.linspace(0.02, 0.5, 10))}
  train_labels = np.array([0, 1, 2, 0, 1, 2])
  rng = np.random.default_rng(1)
  train = {name: {'features': rng.normal(size=(6, 4)), 'frame': _frames(6, 200),
                  'label': train_labels} for name in ('pretrained', 'random')}
  test = {'frame': _frames(2, 50), 'label': np.array([0, 1]),
          'features': {'pretrained': train['pretrained']['features'][:2],
                       'random': rng.normal(size=(2, 4))}}
  grid = report.retrieval_grid(train, test, [0, 1], k=2)
  # A query's own features as the pretrained bank's rows 0 and 1: it is its own nearest video.
  assert grid['encoders']['pretrained']['label'][:, 0].tolist() == [0, 1]
  assert grid['encoders']['pretrained']['frame'].shape == (2, 2, 8, 8, 3)
  path = report.write_report(
      str(tmp_path / 'report.png'), scalars=scalars,
      fractions={'pretrained': {1.0: 0.8, 0.1: 0.6, 0.01: 0.3},
                 'random': {1.0: 0.3, 0.1: 0.2, 0.01: 0.15}},
      retrieval=grid, encoder_titles={'pretrained': 'CVRL', 'random': 'random init'},
      title='test')
  image = np.asarray(Image.open(path).convert('RGB')).astype(int)
  assert image.shape[0] > 400 and image.shape[1] > 800
  # The grid frames a matching neighbour in green and a wrong one in red (matplotlib's 'green'
  # is (0, 128, 0), 'red' (255, 0, 0)).
  green = (np.abs(image - [0, 128, 0]).sum(-1) < 30).sum()
  red = (np.abs(image - [255, 0, 0]).sum(-1) < 30).sum()
  assert green > 50
  wrong = sum(int((grid['encoders'][n]['label'] != test['label'][:, None]).sum())
              for n in grid['encoders'])
  assert (red > 50) == (wrong > 0)
