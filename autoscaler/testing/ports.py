"""Loopback ports for tests and benchmarks: a free one to listen on, or one that refuses.

A port picked free and released (`free_port`) can be taken by another process before
it is used: fine for a server that retries a taken port (the Prometheus and Triton
harnesses do), a race for a target that must stay unreachable. Tests run in parallel
(xdist) start Tritons, Prometheus servers and daemons on picked ports all the time; a
"down" target picked that way could answer as one of them, and a test that expects
`up == 0` for it would fail for no fault of the code. `refused_ports` closes that
race: each port it hands out stays bound, never listening, until its block ends. No
other socket can bind it meanwhile, and a connection to it is refused at once
(ECONNREFUSED: no listening socket on the port), which is what a server that is down
looks like.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def refused_ports() -> Iterator[Callable[[], int]]:
    """Within the block, a maker of loopback ports that refuse connections and that no
    other process can take; all are released when the block ends."""
    held: list[socket.socket] = []

    def make() -> int:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        held.append(s)
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

    try:
        yield make
    finally:
        for s in held:
            s.close()
