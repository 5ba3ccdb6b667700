"""Real external services this machine kind starts (PostgreSQL, Redis)."""

from __future__ import annotations

import os
import socket

import pytest

PG_URL = os.environ.get("RXT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the real PostgreSQL server; skipped (with the reason) only where none runs.

    In CI on this machine kind the server is always there, so these tests always run.
    """
    if not _port_open("127.0.0.1", 5432):
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not running on 127.0.0.1:5432, but CI must test against it")
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432")
    return PG_URL
