"""Data layer: DMVR records (`dmvr`), video decoding (`video`), temporal samplers (`sampling`),
tf.data host pipelines (`pipeline`) and the Moving-MNIST demo dataset (`demo`).

Submodules are imported explicitly (`from cvrl_jax.data import pipeline`), so that importing one
does not pull in the others' heavy dependencies.
"""
