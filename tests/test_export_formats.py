"""Exports to PyTorch (safetensors, pytorchvideo names), ONNX and TensorFlow SavedModel: names,
layouts and padding checked against independent references (pytorchvideo's own state dict list,
a direct conv sum in PyTorch's layout, TensorFlow's SAME ops), and every reloaded export gives
the JAX encoder's features. Writers refuse folders holding files they did not write."""
import inspect
import json
import os

import jax
import numpy as np
import pytest
import tensorflow as tf

from cvrl_jax import config_lib
from cvrl_jax import export
from cvrl_jax import export_common
from cvrl_jax import export_onnx
from cvrl_jax import export_tf
from cvrl_jax import export_torch
from cvrl_jax import models
from cvrl_jax import torch_loader
from cvrl_jax.models import conv as conv_lib

import weights_testlib

PYTORCHVIDEO_FIXTURE = os.path.join(weights_testlib.DATA_DIR, 'pytorchvideo_r3d50_state_dict.json')
EVEN_CLIPS = (2, 6, 32, 32, 3)
ODD_CLIPS = (1, 5, 33, 31, 3)


def model_config(depth=50, width=1 / 16):
  cfg = config_lib.model_config()
  cfg.depth, cfg.width_multiplier, cfg.dtype, cfg.bn_momentum = depth, width, 'float32', 0.9
  return cfg


def random_variables(cfg, seed=0):
  """Non-trivial values for every leaf: kernels ~ N(0, 1/fan_in), BN variances in [0.5, 2]."""
  rng = np.random.default_rng(seed)
  abstract = export.abstract_variables(models.build_backbone(cfg),
                                       jax.sharding.SingleDeviceSharding(jax.devices()[0]))

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['var']"):
      return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
    if name.endswith("['scale']"):
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 10
    return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(fill, abstract)


@pytest.fixture(scope='module')
def tiny_export(tmp_path_factory):
  """A backbone export of a tiny R3D-50 with random weights, and its JAX features."""
  cfg = model_config()
  variables = random_variables(cfg)
  path = export.export_backbone(str(tmp_path_factory.mktemp('tiny') / 'backbone'),
                                jax.device_put(variables), cfg)
  backbone, loaded, _ = export_common.load_checkpoint(path)
  rng = np.random.default_rng(5)
  clips = {shape: rng.uniform(0, 1, shape).astype(np.float32) for shape in (EVEN_CLIPS, ODD_CLIPS)}
  forward = jax.jit(lambda v, x: backbone.apply(v, x, train=False))
  features = {shape: np.asarray(forward(loaded, x)) for shape, x in clips.items()}
  return path, cfg, variables, clips, features


def assert_same_features(got, expected):
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


# ------------------------------------------------------------------------------------------------
# PyTorch.
# ------------------------------------------------------------------------------------------------
def test_state_dict_has_pytorchvideo_create_resnet_names_and_shapes():
  fixture = json.load(open(PYTORCHVIDEO_FIXTURE))
  expected = {name: tuple(shape) for name, shape, _ in fixture['state_dict']}
  cfg = model_config(width=1.0)
  abstract = export.abstract_variables(models.build_backbone(cfg),
                                       jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  zeros = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), abstract)
  state = export_torch.state_dict(zeros, cfg)
  assert {k: v.shape for k, v in state.items()} == expected
  dtypes = {name: dtype for name, _, dtype in fixture['state_dict']}
  assert all((state[k].dtype == np.int64) == (dtypes[k] == 'torch.int64') for k in state)
  assert export_torch.create_resnet_kwargs(cfg)['stage_conv_a_kernel_size'] == [
      [1, 1, 1], [1, 1, 1], [3, 1, 1], [3, 1, 1]]


def test_torch_kernel_layout_gives_the_same_convolution():
  """PyTorch's Conv3d is out[o] = sum_{i,t,h,w} W[o, i, t, h, w] x[i, t, h, w] (NCTHW)."""
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(3, 5, 7, 4, 6)).astype(np.float32)  # ours: (kt, kh, kw, in, out)
  patch = rng.normal(size=(1, 3, 5, 7, 4)).astype(np.float32)  # NTHWC, the kernel's extent
  ours = np.asarray(jax.lax.conv_general_dilated(
      patch, kernel, (1, 1, 1), 'VALID', dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC')))[0, 0, 0, 0]
  torch_weight = export_torch.to_torch_layout('params/x/kernel', kernel)
  torch_input = np.transpose(patch[0], (3, 0, 1, 2))  # [C, T, H, W]
  theirs = np.einsum('oithw,ithw->o', torch_weight, torch_input)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
  assert torch_weight.shape == (6, 4, 3, 5, 7)


def test_bn_momentum_convention():
  """Flax: avg = m * avg + (1 - m) * batch; PyTorch: avg = (1 - p) * avg + p * batch."""
  flax_m = 0.9
  p = export_torch.export_config(model_config())['bn_momentum_torch']
  avg, batch = 2.0, 5.0
  assert flax_m * avg + (1 - flax_m) * batch == pytest.approx((1 - p) * avg + p * batch)


@pytest.mark.parametrize('kernel,stride', [(7, 2), (3, 2), (5, 2), (3, 1), (1, 2)])
def test_loader_padding_is_tensorflow_same(kernel, stride):
  """The loader's (start, end) padding, applied by hand, reproduces TF's own 'SAME' conv."""
  rng = np.random.default_rng(kernel)
  for size in (7, 8, 9, 16, 17):
    x = rng.normal(size=(1, size, 1)).astype(np.float32)
    w = rng.normal(size=(kernel, 1, 1)).astype(np.float32)
    same = tf.nn.conv1d(x, w, stride, 'SAME').numpy()
    pads = torch_loader.same_pads(size, kernel, stride)
    manual = tf.nn.conv1d(np.pad(x, ((0, 0), pads, (0, 0))), w, stride, 'VALID').numpy()
    np.testing.assert_allclose(manual, same, rtol=1e-6, atol=1e-6)
    assert pads == conv_lib.same_padding(size, kernel, stride)


def test_export_torch_writes_weights_config_and_loader(tiny_export, tmp_path):
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  path, cfg, variables, _, _ = tiny_export
  out = export_torch.export_torch(path, str(tmp_path / 'torch'))
  assert sorted(os.listdir(out)) == sorted(['model.safetensors', 'config.json',
                                            'cvrl_torch_loader.py', 'cvrl_jax_manifest.json'])
  tensors = load_file(os.path.join(out, 'model.safetensors'))
  kernel = np.asarray(variables['params']['stage2_block1']['conv2']['kernel'])
  np.testing.assert_array_equal(tensors['blocks.2.res_blocks.0.branch2.conv_b.weight'],
                                np.transpose(kernel, (4, 3, 0, 1, 2)))
  np.testing.assert_array_equal(tensors['blocks.0.norm.running_var'],
                                variables['batch_stats']['stem_bn']['var'])
  config = json.load(open(os.path.join(out, 'config.json')))
  assert config['create_resnet']['stem_dim_out'] == 4 and config['bn_epsilon'] == 1e-5
  assert open(os.path.join(out, 'cvrl_torch_loader.py')).read() == inspect.getsource(torch_loader)
  assert export_torch.export_torch(path, out) == out  # a re-run replaces its own files
  basic = model_config(depth=18)
  with pytest.raises(export_common.ExportError, match='R3D-18 has basic blocks'):
    export_torch.check_supported(basic)


def test_torch_loader_gives_the_jax_features(tiny_export, tmp_path):
  torch = pytest.importorskip('torch')
  pytest.importorskip('pytorchvideo')
  path, _, _, clips, features = tiny_export
  out = export_torch.export_torch(path, str(tmp_path / 'torch'))
  model = torch_loader.load_model(out)
  for shape, x in clips.items():
    with torch.no_grad():
      got = model(torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 4, 1, 2, 3)))))
    assert_same_features(got.numpy(), features[shape])


# ------------------------------------------------------------------------------------------------
# ONNX and TensorFlow.
# ------------------------------------------------------------------------------------------------
def test_onnx_export_gives_the_jax_features(tiny_export, tmp_path):
  import onnxruntime  # pylint: disable=g-import-not-at-top
  path, _, _, clips, features = tiny_export
  out = export_onnx.export_onnx(path, str(tmp_path / 'onnx'))
  session = onnxruntime.InferenceSession(os.path.join(out, 'model.onnx'),
                                         providers=['CPUExecutionProvider'])
  for shape, x in clips.items():  # free batch, frames and size; odd sizes pad as TF does
    assert_same_features(session.run(['features'], {'clips': x})[0], features[shape])


def test_onnx_export_of_basic_blocks(tmp_path):
  import onnxruntime  # pylint: disable=g-import-not-at-top
  cfg = model_config(depth=18, width=1 / 8)
  variables = random_variables(cfg, seed=3)
  x = np.random.default_rng(2).uniform(0, 1, (1, 4, 32, 32, 3)).astype(np.float32)
  expected = np.asarray(models.build_backbone(cfg).apply(variables, x, train=False))
  model = export_onnx.build_model(variables, cfg)
  session = onnxruntime.InferenceSession(model.SerializeToString(),
                                         providers=['CPUExecutionProvider'])
  assert_same_features(session.run(['features'], {'clips': x})[0], expected)


def test_tf_saved_model_gives_the_jax_features(tiny_export, tmp_path):
  path, _, _, clips, features = tiny_export
  out = export_tf.export_tf(path, str(tmp_path / 'tf'))
  loaded = tf.saved_model.load(os.path.join(out, 'saved_model'))
  x = clips[EVEN_CLIPS]
  assert_same_features(loaded.features(tf.constant(x)).numpy(), features[EVEN_CLIPS])
  serving = loaded.signatures['serving_default']
  assert_same_features(list(serving(clips=tf.constant(x[:1])).values())[0].numpy(),
                       features[EVEN_CLIPS][:1])


# ------------------------------------------------------------------------------------------------
# Output rules.
# ------------------------------------------------------------------------------------------------
def test_writers_refuse_foreign_folders_and_non_finite_weights(tiny_export, tmp_path,
                                                               monkeypatch):
  path, cfg, variables, _, _ = tiny_export
  foreign = tmp_path / 'foreign'
  foreign.mkdir()
  (foreign / 'results.csv').write_text('keep me')
  for writer in (export_onnx.export_onnx, export_torch.export_torch):
    with pytest.raises(export_common.ExportError, match='holds files this writer did not write'):
      writer(path, str(foreign))
  assert sorted(os.listdir(foreign)) == ['results.csv']
  # Another writer's finished folder is foreign too.
  onnx_dir = export_onnx.export_onnx(path, str(tmp_path / 'onnx'))
  with pytest.raises(export_common.ExportError, match='did not write'):
    export_torch.export_torch(path, onnx_dir)
  assert os.path.exists(os.path.join(onnx_dir, 'model.onnx'))
  bad = jax.tree.map(np.array, variables)
  bad['params']['stage3_block2']['conv3']['kernel'][0, 0, 0, 0, 0] = np.inf
  monkeypatch.setattr(export_common, 'load_checkpoint',
                      lambda _: (models.build_backbone(cfg), bad, cfg))
  for writer in (export_onnx.export_onnx, export_torch.export_torch, export_tf.export_tf):
    with pytest.raises(export_common.ExportError,
                       match='params/stage3_block2/conv3/kernel has 1 non-finite'):
      writer(path, str(tmp_path / 'bad'))
    assert not (tmp_path / 'bad').exists()
