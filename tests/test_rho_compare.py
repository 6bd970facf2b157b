"""The comparison command's set-up: equal budgets, one evaluation recipe, the table, stale runs.

(Running it is minutes per method: BENCHMARKS.md records a run; nothing here trains.)
"""
import json
import os

import pytest

from cvrl_jax import compare


def test_every_method_gets_the_same_budget_data_and_evaluation():
  configs = {m: compare.pretrain_config(m, '/data', rho=3, epochs=4, steps=0, seed=7)
             for m in compare.METHODS}
  cvrl = configs['cvrl']
  assert cvrl.objective.name == 'cvrl'
  assert len(compare.METHODS) == 14
  for method, config in configs.items():
    for key in ('batch_size', 'num_epochs', 'num_train_steps', 'seed', 'model', 'mesh', 'eval'):
      assert config[key] == cvrl[key], (method, key)
    assert (config.num_epochs, config.seed) == (4, 7)
    if method in (compare.PRETEXT_METHODS + compare.TEMPORAL_METHODS
                  + compare.AUDIO_METHODS):  # its own clip plan; the same videos and test clips
      assert config.objective.name == method
      for key, value in cvrl.data.items():
        if key.startswith('eval_') or key.endswith('_files') or key == 'num_classes':
          assert config.data[key] == value, (method, key)
    else:
      assert config.data == cvrl.data, method
    if method in ('rho_moco', 'rho_byol', 'rho_simclr', 'rho_swav'):
      assert (config.objective.name, config.objective.rho) == (method, 3)
  evals = [compare.eval_config(configs[m], 'knn_eval', f'/runs/{m}', 10) for m in compare.METHODS]
  for e in evals:
    assert e.init_checkpoint.startswith('/runs/') and e.job == 'knn_eval'
    for key in ('optim', 'eval', 'num_epochs', 'batch_size'):
      assert e[key] == evals[0][key], key
    for key, value in evals[0].data.items():  # what the evaluators read (no pretraining clips)
      if key.startswith('eval_') or key.endswith('_files') or key == 'num_classes':
        assert e.data[key] == value, key
  recipe = evals[0]
  assert (recipe.optim.base_lr, recipe.optim.weight_decay, recipe.num_epochs) == (32.0, 0.0, 10)
  with pytest.raises(ValueError, match='unknown method'):
    compare.pretrain_config('simsiam', '/data', rho=2, epochs=1, steps=0, seed=0)


def test_table_and_stale_workdir(tmp_path):
  runs = [{'method': 'ρMoCo', 'rho': 2, 'linear_eval': v, 'knn_eval': 0.3, 'retrieval': 0.5,
           'steps_per_sec': 1.234, 'pretext_accuracy': None} for v in (0.40, 0.44, 0.48)]
  rows = [compare.summarize(runs),
          compare.summarize([{'method': 'VCOP', 'rho': None, 'linear_eval': 0.2, 'knn_eval': 0.25,
                              'retrieval': 0.3, 'steps_per_sec': 2.0, 'pretext_accuracy': 0.9}]),
          compare.summarize([{'method': 'random init', 'rho': None, 'linear_eval': 0.1,
                              'knn_eval': 0.125, 'retrieval': 0.2, 'steps_per_sec': None,
                              'pretext_accuracy': None}])]
  assert rows[0]['linear_eval'] == [0.40, 0.44, 0.48]
  assert compare.format_table(rows).splitlines() == [
      '| method | ρ | pretext acc. | linear top-1 | kNN top-1 | retrieval top-1 | steps/s |',
      '|---|---|---|---|---|---|---|',
      '| ρMoCo | 2 | — | 44.0 ± 4.0 | 30.0 ± 0.0 | 50.0 ± 0.0 | 1.23 ± 0.00 |',  # sample sd
      '| VCOP | — | 90.0 | 20.0 | 25.0 | 30.0 | 2.00 |',
      '| random init | — | — | 10.0 | 12.5 | 20.0 | — |']
  config = compare.pretrain_config('rho_moco', '/data', rho=2, epochs=2, steps=0, seed=0)
  compare._check_same_run(config, str(tmp_path))  # nothing there yet
  with open(os.path.join(tmp_path, 'config.json'), 'w') as f:
    json.dump(dict(config.to_dict(), num_epochs=5), f)
  with pytest.raises(ValueError, match='another num_epochs'):
    compare._check_same_run(config, str(tmp_path))
  # The same run, its config.json written as the trainer writes it (tuples become lists): it
  # resumes. VTDL's objective has tuple crop ranges.
  from cvrl_jax import run_utils
  same = tmp_path / 'same'
  config = compare.pretrain_config('vtdl', '/data', rho=2, epochs=2, steps=0, seed=0)
  assert isinstance(config.objective.crop_area_range, tuple)
  same.mkdir()
  run_utils.write_json(str(same / 'config.json'), config.to_dict())
  compare._check_same_run(config, str(same))


def test_audio_methods_need_demo_videos_with_sound(tmp_path):
  """AVBERT builds on the shared demo budget, and demo videos without sound are one sentence."""
  from cvrl_jax.data import demo
  from cvrl_jax.objectives import build_objective
  config = compare.pretrain_config('avbert', str(tmp_path), rho=2, epochs=1, steps=0, seed=0)
  objective = build_objective(config)
  assert objective.plan.audio is not None
  silent = str(tmp_path / 'silent')
  demo.make_demo_dataset(silent, num_train=4, num_test=2, num_frames=4, num_train_shards=1,
                         num_test_shards=1)
  compare.ensure_demo_data(silent)  # there already: nothing written
  with pytest.raises(ValueError, match='have no sound, which avbert needs'):
    compare.ensure_demo_data(silent, audio=True)


def test_training_speed_is_the_median_after_the_first_window(tmp_path):
  from clu import metric_writers
  writer = metric_writers.SummaryWriter(str(tmp_path / 'run'))
  for step, speed in ((10, 0.5), (20, 2.0), (30, 4.0), (40, 3.0)):  # step 10 includes compiling
    writer.write_scalars(step, {'train/steps_per_sec': speed, 'train/loss': 1.0})
  writer.close()
  assert compare.training_speed(str(tmp_path / 'run')) == 3.0
  single = metric_writers.SummaryWriter(str(tmp_path / 'single'))
  single.write_scalars(10, {'train/steps_per_sec': 0.5})
  single.close()
  assert compare.training_speed(str(tmp_path / 'single')) == 0.5
  with pytest.raises(ValueError, match='has no train/steps_per_sec'):
    compare.training_speed(str(tmp_path))
