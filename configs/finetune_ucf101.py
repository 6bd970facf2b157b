"""Fine-tuning a pretrained R3D-50 on UCF101 (split 1), the recipe's generic supervised video recipe.

docs/recipes/cvrl.md "Evaluation": the reference has no CVRL fine-tune config; its generic
recipe is 32 frames at stride 2 and 224 x 224, batch 64, LR 0.8, 100 epochs, weight decay 1e-4
(SGD momentum 0.9, warmup then cosine). The whole network trains, BatchNorm included; dropout 0.5
before the classifier. Test: 10 temporal x 3 spatial views, softmax averaged, top-1/top-5.

Data: the official split lists as CSVs of `path,label`, converted into one folder (the test split
reuses the train split's labels.txt):
  python -m cvrl_jax.convert --input trainlist01.csv --output DIR --split-name train
  python -m cvrl_jax.convert --input testlist01.csv --output DIR --split-name test
with DIR = gs://YOUR_BUCKET/ucf101 (or set config.data.train_files / eval_files). Then
  python -m cvrl_jax.main --config=configs/finetune_ucf101.py \
      --workdir=gs://YOUR_BUCKET/runs/ucf101_ft \
      --config.init_checkpoint=gs://YOUR_BUCKET/runs/k400
An empty init_checkpoint trains from random initialisation (the from-scratch baseline).
"""
import ml_collections

from cvrl_jax import config_lib

SPLITS = {  # split 1 sizes
    'ucf101': dict(num_classes=101, num_train_examples=9_537),
    'hmdb51': dict(num_classes=51, num_train_examples=3_570),
}


def finetune_config(dataset: str) -> ml_collections.ConfigDict:
  """The recipe on `dataset` ('ucf101' | 'hmdb51'), data read from gs://YOUR_BUCKET/DATASET/."""
  config = config_lib.base_config()
  config.job = 'finetune'
  config.init_checkpoint = ''
  config.data.train_files = f'gs://YOUR_BUCKET/{dataset}/train-*.tfrecord'
  config.data.eval_files = f'gs://YOUR_BUCKET/{dataset}/test-*.tfrecord'
  config.data.num_classes = SPLITS[dataset]['num_classes']
  config.data.num_train_examples = SPLITS[dataset]['num_train_examples']
  config.data.eval_num_frames = 32
  config.data.eval_frame_stride = 2
  config.data.eval_image_size = 224
  config.data.eval_resize = 256
  config.data.eval_crop_size = 256
  config.data.eval_num_temporal_views = 10
  config.data.eval_num_spatial_views = 3

  config.batch_size = 64
  config.num_epochs = 100
  config.optim.name = 'sgd'
  config.optim.momentum = 0.9
  config.optim.base_lr = 0.8
  config.optim.base_batch_size = 64
  config.optim.warmup_epochs = 5.0
  config.optim.schedule = 'cosine'
  config.optim.weight_decay = 1e-4
  config.eval.finetune_dropout = 0.5
  config.eval.batch_size = 64
  config.eval.test_mode = 'test_views'
  return config


def get_config() -> ml_collections.ConfigDict:
  return finetune_config('ucf101')
