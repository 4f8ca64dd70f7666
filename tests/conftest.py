"""Shared fixtures. Keep this file small and generic; add fixtures at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from autoscaler.testing.ports import refused_ports
from autoscaler.testing.triton_server import (
    TritonFactory,
    TritonNotInstalled,
    TritonUnavailable,
    find_installation,
)


def _require_triton() -> None:
    """Skip only when the `[triton]` extra is not installed; a broken install fails."""
    try:
        find_installation()
    except TritonNotInstalled as exc:
        pytest.skip(f"real Triton server not available: {exc}")
    except TritonUnavailable as exc:
        pytest.fail(f"the [triton] extra is installed but unusable: {exc}")


@pytest.fixture
def triton_installed() -> None:
    """For tests that start Triton themselves: skip without the `[triton]` extra."""
    _require_triton()


@pytest.fixture
def triton_factory() -> Iterator[TritonFactory]:
    """Per-test Triton servers (for tests that kill or restart theirs)."""
    _require_triton()
    factory = TritonFactory()
    yield factory
    factory.close_all()


@pytest.fixture(scope="module")
def module_triton_factory() -> Iterator[TritonFactory]:
    """Triton servers shared by the tests of one module (startup is ~1.5 s, plus ~0.5 s/model)."""
    _require_triton()
    factory = TritonFactory()
    yield factory
    factory.close_all()


@pytest.fixture
def refused_port() -> Iterator[Callable[[], int]]:
    """A maker of loopback ports that refuse connections until the test ends: targets
    that must stay down (autoscaler.testing.ports says why not a picked free port)."""
    with refused_ports() as make:
        yield make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, attach each Triton server's state and log tail to the report.

    A CI run once saw "connection refused" from a server mid-test with nothing to say
    why; the next one will show whether the process had exited, and its last words.
    """
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if rep.when != "call" or not rep.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    for name in ("triton_factory", "module_triton_factory"):
        factory = funcargs.get(name)
        for server in getattr(factory, "servers", []):
            proc = getattr(server, "_proc", None)
            code = proc.poll() if proc is not None else None
            if proc is None:
                state = "not running: stopped by the test or never started"
            else:
                state = "running" if code is None else f"exited by itself with {code}"
            rep.sections.append((f"Triton {server.http_url} ({state})", server.log_tail(4000)))


# -- how `make test` runs the suite: two phases ----------------------------------------------
#
# 1. `pytest -n 3 --dist loadgroup -m "not timing"`: most of the suite is CPU-bound
#    simulation and arithmetic, spread over the workers; the tests that drive real
#    processes (Triton, Prometheus, the daemon) wait on conditions and are mostly
#    asleep, so they run in two groups ("real-1", "real-2"), one after another within a
#    group, beside the rest.
# 2. `pytest -m timing`: the tests whose figures are timings of the real server
#    (Table 10's p95, a batch of 16 forming within the batcher's 60 ms, the simulator
#    against the real Triton within 10 %) run alone, on a quiet machine, as their
#    tolerances were set for: on a busy core the 20B's batches split in two (seen).
_REAL_FIXTURES = frozenset({"triton_factory", "module_triton_factory", "triton_installed"})
_REAL_MARKS = frozenset({"triton", "prometheus"})
# Modules that start real servers or time real threads without the fixtures above.
_REAL_MODULES = frozenset(
    {"test_deploy.py", "test_reliability.py", "test_tls_auth.py", "test_waiting.py"}
)
_TIMING_MODULES = frozenset(
    {
        "test_sim_real.py",
        "test_profiling_triton.py",
        "test_triton_harness.py",
        "test_concurrency_real_triton.py",
        "test_triton_inplace_load.py",
        "test_demo.py",
        "test_actuation.py",
        "test_telemetry_real_triton.py",
    }
)
_TIMING_TESTS = frozenset(
    {
        "test_apply_mode_scales_up_and_back_down",  # p95 at 4 instances within 25 %
        "test_scaling_up_and_down_under_load_fails_no_request",
        "test_model_picture_matches_triton_under_load_and_at_rest",
        # 8 clients ride one batch only if their resends land within the batcher's 60 ms:
        # beside two other workers on two cores (stop 22) they split, 7 waited a batch,
        # and the daemon read the load as open and took them to 3
        "test_a_group_of_clients_under_a_batch_keeps_one_20b_instance",
    }
)


def _drives_real_processes(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    return bool(
        names & _REAL_FIXTURES
        or any(m.name in _REAL_MARKS for m in item.iter_markers())
        or item.path.name in _REAL_MODULES
    )


def _times_the_real_server(item: pytest.Item) -> bool:
    return item.path.name in _TIMING_MODULES or item.originalname in _TIMING_TESTS  # type: ignore[attr-defined]


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    real: list[pytest.Item] = []
    modules: list[str] = []
    for item in items:
        if _times_the_real_server(item):
            item.add_marker(pytest.mark.timing)
        elif _drives_real_processes(item):
            # whole modules alternate between the two groups (module fixtures stay put)
            if item.path.name not in modules:
                modules.append(item.path.name)
            group = 1 + modules.index(item.path.name) % 2
            item.add_marker(pytest.mark.xdist_group(f"real-{group}"))
            real.append(item)
    # the long groups first, so that they start at once and the short tests fill in
    chosen = set(map(id, real))
    items[:] = real + [i for i in items if id(i) not in chosen]
