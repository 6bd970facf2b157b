"""Audio-visual classification through the AVBERT Transformer on the demo videos with sound.

  python -m cvrl_jax.data.demo --output /tmp/demo_av --audio
  python -m cvrl_jax.main --config=configs/avbert_demo.py:/tmp/demo_av --workdir=/tmp/avbert
  python -m cvrl_jax.main --config=configs/avbert_av_finetune_demo.py:/tmp/demo_av \
      --workdir=/tmp/avbert_av_ft --config.init_checkpoint=/tmp/avbert

The network and its inputs are configs/avbert_demo.py's (they must match the pretraining run's:
the job checks the architecture keys); the classifier reads the joint pass's visual and audio
summary tokens (docs/recipes/avbert.md, "Audio-visual classification"). An empty
init_checkpoint trains from random initialisation. SGD at LR 0.03 for 5 epochs, dropout 0.1
before the classifier (not tuned).
"""
from cvrl_jax import config_lib


def get_config(data_dir: str = 'demo_data'):
  config = config_lib.load_config_file('avbert_demo', data_dir)
  with config.unlocked():
    config.job = 'av_finetune'
    config.init_checkpoint = ''
    config.num_epochs = 5
    config.optim.base_lr = 0.03
    config.optim.warmup_epochs = 0.0
    config.eval.av_pooling = 'summary'  # or 'mean' (docs/recipes/avbert.md)
    config.eval.finetune_dropout = 0.1
    config.eval.batch_size = 16
  config.lock()
  return config
