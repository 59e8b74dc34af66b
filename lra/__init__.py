"""lra: a Long Range Arena harness on current JAX and Flax NNX."""

__version__ = "0.1.0"
