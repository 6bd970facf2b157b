"""Independent NumPy (float64, loop-based) references of the rho-family losses, for the tests."""
import itertools

import numpy as np


def unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def log_softmax(x):
  x = x - x.max()
  return x - np.log(np.exp(x).sum())


def pairs(v, pairing):
  return [(k, k + 1) for k in range(v - 1)] if pairing == 'adjacent' else list(
      itertools.combinations(range(v), 2))


def numpy_simclr(z, tau, pairing):
  """Sum over pairs of NT-Xent: mean over 2N anchors of -log(e^pos / sum_{m != anchor} e^sim)."""
  total = 0.0
  for i, j in pairs(len(z), pairing):
    h = unit(np.concatenate([z[i], z[j]]))
    n = len(z[i])
    terms = []
    for a in range(2 * n):
      positive = (a + n) % (2 * n)
      others = [m for m in range(2 * n) if m != a]
      sims = np.array([h[a] @ h[m] / tau for m in others])
      terms.append(-(h[a] @ h[positive] / tau) + np.log(np.exp(sims).sum()))
    total += np.mean(terms)
  return total


def numpy_moco(q, k, queue, tau):
  v, n = q.shape[:2]
  q, k = unit(q), unit(k)
  loss = 0.0
  hits = []
  for i in range(v):
    rows = []
    for j in range(v):
      if j == i:
        continue
      for b in range(n):
        logits = np.concatenate([[q[i, b] @ k[j, b]], queue @ q[i, b]]) / tau
        rows.append(-log_softmax(logits)[0])
        hits.append(logits[0] > logits[1:].max())
    loss += np.mean(rows)
  return loss, np.mean(hits)


def numpy_byol(p, z, tau):
  v = len(p)
  p, z = unit(p), unit(z)
  loss = 0.0
  for i in range(v):
    loss += np.mean([np.mean(-np.sum(p[i] * z[j], axis=1) / tau) for j in range(v) if j != i])
  return loss


def numpy_sinkhorn(scores, eps, iters):
  """As the reference writes it: Q is [K, B]; rows (prototypes) to 1/K, columns (samples) to 1/B."""
  q = np.exp(np.asarray(scores, np.float64) / eps).T
  q /= q.sum()
  k, b = q.shape
  for _ in range(iters):
    q *= (1.0 / k / q.sum(axis=1))[:, None]
    q *= (1.0 / b / q.sum(axis=0))[None, :]
  return (q / q.sum(axis=0, keepdims=True)).T


def numpy_swav(scores, tau, pairing, eps=0.05, iters=3):
  codes = [numpy_sinkhorn(s, eps, iters) for s in scores]
  logp = [np.stack([log_softmax(row / tau) for row in np.asarray(s, np.float64)]) for s in scores]
  ce = lambda q, lp: -np.mean(np.sum(q * lp, axis=1))
  return sum(0.5 * (ce(codes[i], logp[j]) + ce(codes[j], logp[i]))
             for i, j in pairs(len(scores), pairing))
