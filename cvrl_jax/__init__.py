"""cvrl_jax: self-supervised video representation learning (CVRL and the rho-family) in JAX/Flax."""

__version__ = "0.1.0"
