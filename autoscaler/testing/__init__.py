"""Test doubles built on the real thing: a CPU Triton server with emulated models.

`emulated_models` writes a model repository whose models sleep for their
profile's service time; `triton_server` starts the real `tritonserver` binary
shipped in the `nvidia-pytriton` wheel (the `[triton]` extra) on that repository.
"""

from autoscaler.testing.emulated_models import EmulatedModel, emulated, write_model_repository

__all__ = ["EmulatedModel", "emulated", "write_model_repository"]
