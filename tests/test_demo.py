"""The demo's results table (the demo itself runs pretraining: `python3 run.py demo`)."""
from cvrl_jax import demo


def test_table_has_both_encoders_and_the_margin_in_points():
  results = {'pretrained': {'linear/top1': 0.614, 'linear/top5': 0.952, 'knn/top1': 0.55},
             'random': {'linear/top1': 0.301, 'linear/top5': 0.7, 'knn/top1': 0.2}}
  lines = demo.format_table(results).splitlines()
  assert lines[0] == '| encoder | linear top-1 | linear top-5 | kNN top-1 |'
  assert lines[2] == '| CVRL pretrained | 61.4 | 95.2 | 55.0 |'
  assert lines[3] == '| random init | 30.1 | 70.0 | 20.0 |'
  assert lines[4] == '| difference | +31.3 | +25.2 | +35.0 |'


def test_table_names_the_cached_feature_probe():
  results = {name: {'linear_cached_features/top1': top1, 'linear_cached_features/top5': 1.0,
                    'knn/top1': top1} for name, top1 in (('pretrained', 0.5), ('random', 0.25))}
  lines = demo.format_table(results).splitlines()
  assert lines[0] == ('| encoder | linear top-1 (cached features) | '
                      'linear top-5 (cached features) | kNN top-1 |')
  assert lines[4] == '| difference | +25.0 | +0.0 | +25.0 |'


def test_fraction_table_reads_every_label_fraction():
  results = {name: {'linear_cached_features/top1': full, 'linear_cached_features/top5': 1.0,
                    'knn/top1': 0.5, 'label_fraction_0.1/top1': ten,
                    'label_fraction_0.01/top1': one}
             for name, full, ten, one in (('pretrained', 0.9, 0.8, 0.55),
                                          ('random', 0.3, 0.25, 0.125))}
  assert demo.fraction_top1(results['random']) == {1.0: 0.3, 0.1: 0.25, 0.01: 0.125}
  lines = demo.format_fraction_table(results).splitlines()
  assert lines[0] == '| labels | CVRL pretrained | random init | difference |'
  assert lines[2:] == ['| 100% | 90.0 | 30.0 | +60.0 |', '| 10% | 80.0 | 25.0 | +55.0 |',
                       '| 1% | 55.0 | 12.5 | +42.5 |']
  assert [demo.fraction_dir(f) for f in demo.LABEL_FRACTIONS] == [
      'linear_eval', 'linear_eval_10pct', 'linear_eval_1pct']


def test_demo_configs_take_the_classes_of_other_converted_videos(tmp_path):
  (tmp_path / 'labels.txt').write_text('ApplyEyeMakeup\nArchery\nBasketball\n')
  for name in ('demo', 'demo_eval'):
    config = demo.load_config(name, str(tmp_path))
    assert config.data.num_classes == 3
    assert config.data.train_files == str(tmp_path / 'train-*-of-*.tfrecord')
    assert config.data.eval_files == str(tmp_path / 'test-*-of-*.tfrecord')
    assert demo.load_config(name, str(tmp_path / 'not_yet')).data.num_classes == 10
