"""Tiny CVRL pretraining on the moving-MNIST demo videos: minutes on a CPU.

  python -m cvrl_jax.data.demo --output demo_data
  python -m cvrl_jax.main --config=configs/demo.py --workdir=/tmp/cvrl_demo
  python -m cvrl_jax.main --config=configs/demo.py:/path/to/demo_data --workdir=/tmp/cvrl_demo

The argument after ':' is the folder the demo data was written to (default ./demo_data). The
recipe is CVRL's, scaled down: R3D-18 at a quarter of the width, 8 frames of 32 x 32, batch 32,
with one change: the random resized crops keep 60-100% of the frame at aspect 3:4-4:3 rather than
CVRL's 30-100% at 1:2-2:1. On a 32-pixel frame filled by one digit, CVRL's smallest crops (a
12 x 25 strip) cut the digit in half; at this budget the contrastive task then stays near
chance (BENCHMARKS.md, "Demo").

Other videos in the same layout work unchanged, e.g. UCF101 converted with
`python -m cvrl_jax.convert ... --output DIR --split-name train` (and `--split-name test` for the
test list): the number of classes is read from DIR/labels.txt (10, the digits, when DIR has none
yet), frames of any size are cropped (pretraining) or resized by the short side and centre-cropped
(evaluation) to 32 x 32.
"""
import ml_collections

from cvrl_jax import config_lib


def get_config(data_dir: str = 'demo_data') -> ml_collections.ConfigDict:
  config = config_lib.demo_base_config(data_dir, num_frames=8, frame_stride=2)

  config.objective.head_hidden_dim = 256
  config.objective.head_output_dim = 64
  config.objective.crop_area_range = (0.6, 1.0)
  config.objective.crop_aspect_range = (0.75, 1.333)

  config.batch_size = 32
  config.num_epochs = 20
  config.optim.base_lr = 0.1  # measured on the demo (BENCHMARKS.md, "Demo")
  config.optim.base_batch_size = 32
  config.optim.warmup_epochs = 1.0

  config.checkpoint.every_steps = 100
  config.log_every_steps = 10
  # The online kNN monitor (TensorBoard 'monitor/knn_top1', the demo's report): centre clips of
  # at most 1,000 train and test videos, 5 times over the run.
  config.knn_every_steps = 250
  config.eval.monitor_max_examples = 1000
  return config
