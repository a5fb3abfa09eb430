"""The test run has a real redis-server, reachable through txredisapi."""

from __future__ import annotations

import pytest_twisted
import txredisapi


@pytest_twisted.inlineCallbacks
def test_real_redis_answers_through_txredisapi(redis_server):
    """SET then GET round-trips on the private redis-server, and it says it is Redis."""
    conn = yield txredisapi.Connection("127.0.0.1", redis_server.port, reconnect=False)
    try:
        yield conn.set("msisdnd:test:key", "value", expire=10)
        value = yield conn.get("msisdnd:test:key")
        info = yield conn.info("server")
    finally:
        yield conn.disconnect()
    assert value == "value"
    assert "redis_version" in info
