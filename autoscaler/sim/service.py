"""Service time of each request of a request trace, from its tokens through the model's profile.

The profile gives one figure per model: the service time S of its measured
request (5B: 277 ms sequential; 20B: a batch in 1050 ms). Model Analyzer
measured it on synthetic requests of one fixed size, so the profile says
nothing about how the time grows with a request's tokens. The simulator uses
the roofline of the GPU for that, and calibrates it to the profile:

    work(i, o) = max(1, r × i) + max(o − 1, 0)      in generated-token steps
    service    = b × work,   b = S / mean(work over the run's requests)

- A generated token is one decode step: at batch 1 it reads every weight
  once, so it is memory-bound (2P bytes per step for P parameters in BF16).
- The prompt's i tokens go through in one prefill pass that produces the
  first output token. It reads the weights once too, but also does 2P FLOPs
  per token, so it costs max(1, r × i) steps, r being the cost of a prompt
  token in decode steps: the GPU's memory bandwidth over its compute, the
  parameter count cancels. H100 PCIe (the R760xa's GPU): 2.0 TB/s over
  756 TFLOP/s dense BF16 → r = 2P/756e12 ÷ 2P/2.0e12 = 1/378 at full
  efficiency; prefill reaches ≈ 55 % of peak compute and decode ≈ 75 % of peak
  bandwidth, so r ≈ 1/378 × 0.75/0.55 ≈ 1/277: `INPUT_TOKEN_WEIGHT` = 1/300.
  A 1500-token prompt then costs 5 decode steps; one of 300 tokens or fewer, 1.
- Without input tokens the prompt counts as one step (a short prompt).
- b makes the mean service over the run's requests equal the profile's S: the
  profile's measured request stands for the trace's mean request, so a model
  serves the same requests per second as its profile says, and token counts
  only spread the service times around that mean. A heavy-tailed output
  distribution (production CVs of 0.7–2.2) gives service times as heavy-tailed.
- Batched models (Triton's dynamic batcher with a static-batching backend such
  as FasterTransformer) run a batch until its longest request is done: the
  batch time is b × the largest work in the batch, with b calibrated the same
  way (a batch whose largest request is the trace's mean request takes the
  profile's batch time). Like the profile's batch time, it does not depend on
  how many requests share the batch.
- The measured jitter at a fixed request size (the profile's CV, 0.03 by
  default) stays on top, as a factor with mean 1.
- A trace that gives each request's service time (`service_ms`) is used as is.

Not modelled: the KV cache read per decode step (it grows with the context:
+≈ 30 % per step at 8 k tokens for a 5B), the prefill of a batch growing with
its size, and in-flight (continuous) batching.
"""

from __future__ import annotations

import numpy as np

from autoscaler.sim.workload import Requests

INPUT_TOKEN_WEIGHT = 1.0 / 300.0


def token_work(
    output_tokens: np.ndarray,
    input_tokens: np.ndarray | None,
    input_token_weight: float = INPUT_TOKEN_WEIGHT,
) -> np.ndarray:
    """Each request's work in decode steps: max(1, r × input) + max(output − 1, 0)."""
    out = np.maximum(np.asarray(output_tokens, dtype=float) - 1.0, 0.0)
    if input_tokens is None:
        return out + 1.0
    prefill = np.maximum(1.0, input_token_weight * np.asarray(input_tokens, dtype=float))
    return prefill + out


def request_work_s(
    requests: Requests, mean_service_s: float, input_token_weight: float = INPUT_TOKEN_WEIGHT
) -> np.ndarray | None:
    """Each request's service (sequential) or batch time if it were alone (batched), in s.

    None when the requests carry neither tokens nor service times (the profile's
    service time applies). From tokens: b × work, with b set so that the mean
    over these requests is `mean_service_s` (see the module docstring).
    """
    if requests.service_ms is not None:
        return np.asarray(requests.service_ms, dtype=float) / 1000.0
    if requests.output_tokens is None or not len(requests):
        return None
    work = token_work(requests.output_tokens, requests.input_tokens, input_token_weight)
    per_step = mean_service_s / float(work.mean())
    scaled: np.ndarray = work * per_step
    return scaled


def jitter(rng: np.random.Generator, cv: float, n: int) -> np.ndarray:
    """n lognormal factors with mean 1 and coefficient of variation `cv` (1.0 when cv = 0)."""
    if cv <= 0:
        return np.ones(n)
    sigma = float(np.sqrt(np.log1p(cv * cv)))
    draws: np.ndarray = rng.lognormal(-sigma * sigma / 2, sigma, n)
    return draws
