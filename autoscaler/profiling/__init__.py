"""Profiling: measure a model's optimal concurrency, import Model Analyzer results, watch drift.

- `sweep`: a closed-loop concurrency sweep against a live Triton server;
- `optimum`: the pure rule that picks the optimum from the measured levels;
- `model_analyzer`: the same levels read from Model Analyzer's result CSVs;
- `writer`: the result as a model profile in the `policies/` format;
- `drift`: a running check, from live windows, that the profile still holds.
"""
