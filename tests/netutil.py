"""Small helpers shared by the fixtures that start emulators (moto, Azurite, LocalStack)."""

from __future__ import annotations

import socket

# the dummy AWS secret every test process uses (tests check that it never shows in output)
DUMMY_SECRET = "cold-test-secret-DO-NOT-LEAK-1234567890"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
