"""Shared fixtures. Keep this file small and generic; add fixtures at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
