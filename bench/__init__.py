"""Benchmarks: `python -m bench` runs them all and regenerates docs/benchmarks.md.

Each benchmark is a module `bench/bench_<name>.py` with a `main(argv)` that
measures, writes `bench/results/<name>.json` through `bench._common.write_result`
and returns 0. They are not tests: no figure here is asserted anywhere.
"""
