"""The demo's report image: did pretraining work? One PNG with three parts.

1. Training curves of the pretraining run, read from its TensorBoard events: the contrastive loss,
   the contrastive accuracy (the positive is the most similar of the batch's clips) and the online
   kNN monitor (test top-1 of the current encoder, `config.knn_every_steps`).
2. Test top-1 of the linear probe at each label fraction (config.eval.label_fraction), pretrained
   encoder against the same architecture at random initialisation.
3. A retrieval grid: a few test videos (the middle frame of their centre clip) and, under each
   encoder, the middle frames of their nearest training videos by cosine similarity of the
   centre-clip features (the kNN evaluation's neighbours), framed green when the neighbour has
   the query's class and red when not.

  write_report(path, scalars=events.read_scalars(pretrain_dir), fractions=..., retrieval=...)
"""
from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np

PyTree = Any
# (TensorBoard tag, panel title) of the training curves, in panel order.
CURVES = (('train/loss', 'contrastive loss'),
          ('train/contrastive_accuracy', 'contrastive accuracy'),
          ('monitor/knn_top1', 'online kNN monitor: test top-1'))


def centre_clip_frames_and_features(config, mesh, backbone, variables: PyTree, split: str
                                    ) -> Dict[str, np.ndarray]:
  """{'features' [N, C], 'frame' uint8 [N, H, W, 3] (the centre clip's middle frame), 'label'}
  of every video of `split` ('train' or 'eval'), in the evaluation pipeline's order."""
  from cvrl_jax.evaluate import features  # pylint: disable=g-import-not-at-top

  def predict(variables, batch):
    video = batch['video']  # [B, 1, T, H, W, 3]
    return {'features': features.backbone_features(backbone, variables, video)[:, 0],
            'frame': video[:, 0, video.shape[2] // 2]}

  inference = features.Inference(predict, mesh)
  return inference.run(variables,
                       features.eval_batches(config, mesh, split=split, mode='center_clip'),
                       name=f'{split} frames and features (center_clip)')


def nearest_training_videos(train_features: np.ndarray, query_features: np.ndarray, k: int
                            ) -> np.ndarray:
  """int [Q, k]: indices of each query's k most cosine-similar training videos, best first."""
  def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  sims = unit(query_features) @ unit(train_features).T
  return np.argsort(-sims, axis=1, kind='stable')[:, :k]


def retrieval_grid(train: Mapping[str, Mapping[str, np.ndarray]],
                   test: Mapping[str, np.ndarray], queries: Sequence[int], k: int
                   ) -> Dict[str, Any]:
  """The grid's content. `train[name]` / `test` hold 'features', 'frame' and 'label' (test's
  features per encoder: test['features'][name]); returns query frames and labels and, per
  encoder, the neighbours' frames and labels."""
  grid = {'query_frame': test['frame'][list(queries)], 'query_label': test['label'][list(queries)],
          'encoders': {}}
  for name, bank in train.items():
    index = nearest_training_videos(bank['features'], test['features'][name][list(queries)], k)
    grid['encoders'][name] = {'frame': bank['frame'][index], 'label': bank['label'][index]}
  return grid


def pick_queries(labels: np.ndarray, count: int, seed: int) -> list:
  """`count` test videos of distinct classes where possible, chosen by `seed`."""
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(labels))
  chosen, seen = [], set()
  for i in order:
    if int(labels[i]) not in seen:
      chosen.append(int(i))
      seen.add(int(labels[i]))
    if len(chosen) == count:
      return chosen
  rest = [int(i) for i in order if int(i) not in chosen]
  return chosen + rest[:count - len(chosen)]


def write_report(path: str, *, scalars: Mapping[str, Tuple[np.ndarray, np.ndarray]],
                 fractions: Mapping[str, Mapping[float, float]], retrieval: Mapping[str, Any],
                 encoder_titles: Mapping[str, str], title: str) -> str:
  """Draws the report (module docstring) to `path` (PNG); returns the path.

  fractions: {encoder: {label fraction: linear test top-1 in [0, 1]}}.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  encoders = list(retrieval['encoders'])
  num_queries = len(retrieval['query_label'])
  k = retrieval['encoders'][encoders[0]]['label'].shape[1] if encoders else 0
  grid_cols = 1 + len(encoders) * k
  fig = plt.figure(figsize=(max(12, 1.1 * grid_cols), 7 + 1.15 * num_queries))
  outer = fig.add_gridspec(2, 1, height_ratios=[3.2, 1.15 * num_queries], hspace=0.25)
  top = outer[0].subgridspec(1, len(CURVES) + 1, wspace=0.35)

  for column, (tag, panel_title) in enumerate(CURVES):
    ax = fig.add_subplot(top[0, column])
    if tag in scalars:
      steps, values = scalars[tag]
      ax.plot(steps, values, marker='o' if len(steps) < 20 else None, markersize=3)
    else:
      ax.text(0.5, 0.5, f'no {tag} in the\nTensorBoard events', ha='center', va='center',
              transform=ax.transAxes)
    ax.set_title(panel_title, fontsize=10)
    ax.set_xlabel('pretraining step')
    ax.grid(alpha=0.3)

  ax = fig.add_subplot(top[0, len(CURVES)])
  for name, by_fraction in fractions.items():
    xs = sorted(by_fraction)
    ax.plot([100 * x for x in xs], [100 * by_fraction[x] for x in xs], marker='o',
            label=encoder_titles.get(name, name))
  ax.set_xscale('log')
  ax.set_xlabel('labelled training videos (%)')
  ax.set_ylabel('linear probe test top-1 (%)')
  ax.set_title('accuracy by label fraction', fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)

  cells = outer[1].subgridspec(num_queries, grid_cols, wspace=0.08, hspace=0.3)
  for row in range(num_queries):
    query_label = int(retrieval['query_label'][row])
    query_heading = 'test video\n' if row == 0 else ''  # headings on the first row only
    panels = [(retrieval['query_frame'][row], f'{query_heading}class {query_label}', 'black')]
    for name in encoders:
      neighbours = retrieval['encoders'][name]
      for j in range(k):
        label = int(neighbours['label'][row, j])
        heading = (f'{encoder_titles.get(name, name)}\nneighbour {j + 1}' if row == 0
                   else '')
        panels.append((neighbours['frame'][row, j], f'{heading}\nclass {label}'.strip(),
                       'green' if label == query_label else 'red'))
    for column, (frame, caption, colour) in enumerate(panels):
      ax = fig.add_subplot(cells[row, column])
      ax.imshow(frame, interpolation='nearest')
      ax.set_xticks([])
      ax.set_yticks([])
      for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(3 if colour != 'black' else 1)
      ax.set_title(caption, fontsize=7, color=colour if colour != 'black' else 'black')
  fig.suptitle(title, fontsize=12, y=0.94)  # just above the curves, not the figure's top edge
  fig.savefig(path, dpi=90, bbox_inches='tight')
  plt.close(fig)
  return path
