"""Imported Model Garden weights give the Model Garden's features: the figure in BENCHMARKS.md.

  /work/venvs/tfmg/bin/python tools/model_garden_reference.py --output=/tmp/mg_reference
  PYTHONPATH=. python tools/crosscheck_model_garden.py --reference=/tmp/mg_reference

Imports REFERENCE/ckpt-1 with `python -m cvrl_jax.import_checkpoint` (the real command line),
loads the export as an evaluation job does (`cvrl_jax.export.load_backbone`), runs the same clips
through it in float32 and prints the largest absolute and relative (to the largest feature)
difference from the Model Garden's own features in REFERENCE/reference.npz.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--reference', required=True)
  args = parser.parse_args()
  output = os.path.join(tempfile.mkdtemp(prefix='mg_import_'), 'backbone')
  command = [sys.executable, '-m', 'cvrl_jax.import_checkpoint', '--from=model_garden',
             f'--checkpoint={os.path.join(args.reference, "ckpt-1")}', f'--output={output}']
  print(' '.join(command))
  subprocess.run(command, check=True, cwd=REPO_ROOT)

  from cvrl_jax import startup  # pylint: disable=g-import-not-at-top
  startup.configure_process()
  import jax  # pylint: disable=g-import-not-at-top
  from cvrl_jax import export_common  # pylint: disable=g-import-not-at-top
  backbone, variables, model_cfg = export_common.load_checkpoint(output)
  reference = np.load(os.path.join(args.reference, 'reference.npz'))
  ours = np.asarray(jax.jit(lambda v, x: backbone.apply(v, x, train=False))(
      variables, reference['clips']))
  theirs = reference['features']
  diff = np.abs(ours - theirs)
  num_values = sum(np.size(x) for x in jax.tree.leaves(variables))
  print(f'{model_cfg.depth=} {model_cfg.bn_epsilon=} values={num_values:,} '
        f'clips={reference["clips"].shape}')
  print(f'max |ours - model garden| = {diff.max():.3g}; relative to max |feature| '
        f'{np.abs(theirs).max():.3g}: {diff.max() / np.abs(theirs).max():.3g}; '
        f'max elementwise relative {np.max(diff / np.maximum(np.abs(theirs), 1e-6)):.3g}')


if __name__ == '__main__':
  main()
