"""kNN classification and clip retrieval of a pretrained R3D-50 on UCF101 (split 1).

Retrieval follows the VCOP protocol (Xu et al., 2019): every video's feature is the mean of the
features of 10 clips spread uniformly over it (centre crops), test videos query the training
videos by cosine similarity, and top-k (k = 1, 5, 10, 20, 50) is a hit when one of the k nearest
training videos has the query's class. kNN: k = 200 neighbours vote with weight exp(sim / 0.07).
Clips here are CVRL's 32 frames at stride 2 with a 224 centre crop of the short-side-256 frames.

  python -m cvrl_jax.main --config=configs/knn_eval_ucf101.py \
      --workdir=gs://YOUR_BUCKET/runs/ucf101_knn \
      --config.init_checkpoint=gs://YOUR_BUCKET/runs/k400
"""
import ml_collections

from cvrl_jax import config_lib


def get_config() -> ml_collections.ConfigDict:
  config = config_lib.base_config()
  config.job = 'knn_eval'
  config.init_checkpoint = ''
  config.data.train_files = 'gs://YOUR_BUCKET/ucf101/train-*.tfrecord'
  config.data.eval_files = 'gs://YOUR_BUCKET/ucf101/test-*.tfrecord'
  config.data.num_classes = 101
  config.data.eval_num_frames = 32
  config.data.eval_frame_stride = 2
  config.data.eval_resize = 256
  config.data.eval_crop_size = 224
  config.data.eval_num_temporal_views = 10
  config.data.eval_num_spatial_views = 1  # the centre crop
  config.eval.knn_mode = 'test_views'
  config.eval.knn_k = 200
  config.eval.knn_temperature = 0.07
  config.eval.retrieval_ks = (1, 5, 10, 20, 50)
  config.eval.batch_size = 64
  return config
