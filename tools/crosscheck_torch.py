"""A PyTorch export gives our features in pytorchvideo: the figure in BENCHMARKS.md.

  python3 -m venv /work/venvs/torch
  /work/venvs/torch/bin/pip install torch==2.14.1 torchvision==0.29.1 pytorchvideo safetensors
  PYTHONPATH=. python tools/crosscheck_torch.py --init_checkpoint=EXPORT \
      --torch-python=/work/venvs/torch/bin/python [--frames=16 --size=112]

Exports EXPORT with `python -m cvrl_jax.export_torch` (the real command line), computes our
float32 features of random clips in JAX, then, in the torch interpreter (this file's
--torch-worker mode), loads the export with the exported cvrl_torch_loader.py and computes the
features of the same clips twice: as loaded (TF-style SAME padding), and with pytorchvideo's own
symmetric padding (to show why the loader pads as it does). Clips have an even and an odd size so
both paddings are exercised.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torch_worker(export_dir: str, clips_file: str, out_file: str) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, export_dir)
  import cvrl_torch_loader  # pylint: disable=g-import-not-at-top
  from pytorchvideo.models import resnet  # pylint: disable=g-import-not-at-top
  from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(2)
  model = cvrl_torch_loader.load_model(export_dir)
  config = cvrl_torch_loader.read_config(export_dir)
  plain = resnet.create_resnet(head=None, **{
      k: (tuple(tuple(x) for x in v) if k == 'stage_conv_a_kernel_size' else
          tuple(v) if isinstance(v, list) else v) for k, v in config['create_resnet'].items()})
  for module in plain.modules():
    if isinstance(module, torch.nn.BatchNorm3d):
      module.eps = config['bn_epsilon']
  plain.load_state_dict(load_file(os.path.join(export_dir, 'model.safetensors')), strict=True)
  plain.eval()
  results = {}
  data = np.load(clips_file)
  with torch.no_grad():
    for key in data.files:
      x = torch.from_numpy(np.ascontiguousarray(np.transpose(data[key], (0, 4, 1, 2, 3))))
      results[f'{key}_same'] = model(x).numpy()
      results[f'{key}_symmetric'] = plain(x).mean(dim=(2, 3, 4)).numpy()
  np.savez(out_file, **results)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--init_checkpoint', default='')
  parser.add_argument('--torch-python', default='')
  parser.add_argument('--frames', type=int, default=16)
  parser.add_argument('--size', type=int, default=112)
  parser.add_argument('--torch-worker', nargs=3, metavar=('EXPORT', 'CLIPS', 'OUT'))
  args = parser.parse_args()
  if args.torch_worker:
    torch_worker(*args.torch_worker)
    return

  work = tempfile.mkdtemp(prefix='torch_check_')
  export_dir = os.path.join(work, 'torch_export')
  command = [sys.executable, '-m', 'cvrl_jax.export_torch',
             f'--init_checkpoint={args.init_checkpoint}', f'--output={export_dir}']
  print(' '.join(command))
  subprocess.run(command, check=True, cwd=REPO_ROOT)

  from cvrl_jax import startup  # pylint: disable=g-import-not-at-top
  startup.configure_process()
  import jax  # pylint: disable=g-import-not-at-top
  from cvrl_jax import export_common  # pylint: disable=g-import-not-at-top
  backbone, variables, model_cfg = export_common.load_checkpoint(args.init_checkpoint)
  rng = np.random.default_rng(0)
  clips = {'even': rng.uniform(0, 1, (2, args.frames, args.size, args.size, 3)),
           'odd': rng.uniform(0, 1, (2, args.frames + 1, args.size + 1, args.size + 1, 3))}
  clips = {k: v.astype(np.float32) for k, v in clips.items()}
  clips_file = os.path.join(work, 'clips.npz')
  np.savez(clips_file, **clips)
  forward = jax.jit(lambda v, x: backbone.apply(v, x, train=False))
  ours = {k: np.asarray(forward(variables, v)) for k, v in clips.items()}

  out_file = os.path.join(work, 'torch.npz')
  subprocess.run([args.torch_python, os.path.abspath(__file__), '--torch-worker', export_dir,
                  clips_file, out_file], check=True)
  theirs = np.load(out_file)
  print(f'R3D-{model_cfg.depth} width {model_cfg.width_multiplier:g}, '
        f'bn_epsilon {model_cfg.bn_epsilon:g}')
  report = {}
  for key, value in ours.items():
    scale = np.abs(value).max()
    for padding in ('same', 'symmetric'):
      diff = np.abs(theirs[f'{key}_{padding}'] - value).max()
      report[f'{key} {clips[key].shape[1:4]} {padding}'] = float(diff / scale)
      print(f'clips {key} {clips[key].shape}: pytorch ({padding} padding) vs jax: max abs diff '
            f'{diff:.3g}, relative to max |feature| {scale:.3g}: {diff / scale:.3g}')
  print(json.dumps(report))


if __name__ == '__main__':
  main()
