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
