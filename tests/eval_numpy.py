"""Independent NumPy (float64, loop-based) references of the kNN vote and VCOP retrieval."""
import numpy as np


def unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def knn_scores(query, bank, bank_labels, num_classes, k, temperature):
  """Class scores [Q, C]: the k most cosine-similar bank rows vote exp(sim / T) for their class."""
  sims = unit(query) @ unit(bank).T
  scores = np.zeros((len(query), num_classes))
  for i in range(len(query)):
    for j in np.argsort(-sims[i], kind='stable')[:k]:
      scores[i, bank_labels[j]] += np.exp(sims[i, j] / temperature)
  return scores


def knn_top1(query, query_labels, bank, bank_labels, num_classes, k, temperature):
  scores = knn_scores(query, bank, bank_labels, num_classes, k, temperature)
  return float(np.mean(np.argmax(scores, axis=1) == query_labels))


def retrieval(query, query_labels, bank, bank_labels, ks):
  """The VCOP script's rule: sort by cosine distance; a hit if the class is among the top k."""
  order = np.argsort(1.0 - unit(query) @ unit(bank).T, axis=1, kind='stable')
  return {k: float(np.mean([y in bank_labels[order[i, :k]] for i, y in enumerate(query_labels)]))
          for k in ks}
