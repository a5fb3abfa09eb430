"""The Redis connection pool as a service of the daemon."""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import Service

from msisdnd.state.redis import TimedRedis


class RedisConnection(Service):
    """Connects C{redis} (the L{TimedRedis} every store shares) when started.

    @param connect: makes the txredisapi pool; called at start, so that an
        embedded Redis started before it is there to be reached.
    """

    def __init__(self, redis: TimedRedis, connect: Callable[[], Any]):
        self.redis = redis
        self.connect = connect
        self.pool: Any = None

    def startService(self) -> None:
        super().startService()
        self.pool = self.connect()
        self.redis.redis = self.pool

    def stopService(self):
        super().stopService()
        if self.pool is not None:
            return self.pool.disconnect()
        return None
