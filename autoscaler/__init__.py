"""triton-autoscaler: keeps every Triton model at the right number of instances."""

__version__ = "0.1.0"
