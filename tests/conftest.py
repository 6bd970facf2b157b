"""Test set-up: 8 fake CPU devices so sharding and collectives are real, TensorFlow kept off accelerators."""
import os

# Must happen before JAX is imported anywhere in the test process.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from cvrl_jax.models import conv as _conv  # noqa: E402

_conv.apply_cpu_xla_flags()  # what the entry points do (cvrl_jax.startup), before JAX starts

import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_SPEC = os.path.join(os.path.dirname(REPO_ROOT), "shared", "spec")


@pytest.fixture(scope="session")
def repo_root():
  return REPO_ROOT
