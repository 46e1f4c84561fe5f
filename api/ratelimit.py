"""The per-client rate limit of the API (``ROBUSTLAB_AUTH=keys``), shared by every API process.

Built on the ``limits`` library: a sliding-window counter of ``burst`` requests per ``burst / rate`` seconds per
client (≈ ``rate`` requests/s sustained, bursts of ``burst``), kept in Redis — ``settings.rate_limit_storage``, by
default the broker's Redis — so N API processes (``WEB_CONCURRENCY``, several hosts) enforce one limit between
them; on the embedded set-up (no Redis) the counters live in the process. If the store cannot be reached the
request is let through and the failure logged: a rate limit must not take the API down with it.

Clients are ``key:<name>`` (a valid API key), ``ip:<address>`` (a public read without a key) and
``bad-key:<address>``: a request whose key is invalid or revoked is charged to its address *before* the key is
looked up in the database, so guessing keys is limited like anything else (and costs no query once over).
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItemPerSecond, storage, strategies
from limits.errors import StorageError

from core.config import Settings

log = logging.getLogger(__name__)
NAMESPACE = "robustlab-rate"


def storage_url(settings: Settings) -> str:
    """Where the counters live: the setting, else the broker's Redis, else this process's memory."""
    if settings.rate_limit_storage:
        return settings.rate_limit_storage
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return settings.broker_url
    return "memory://"


class RateLimiter:
    """``take(client)``: ``0.0`` if ``client`` may make a request now (and counts it), else the seconds to wait."""

    def __init__(self, settings: Settings) -> None:
        self.rate, self.burst = settings.rate_limit, settings.rate_limit_burst
        self.item = RateLimitItemPerSecond(self.burst, max(1, round(self.burst / self.rate)) if self.rate > 0 else 1)
        options = {"wrap_exceptions": True}
        url = storage_url(settings)
        if url.startswith(("redis://", "rediss://")):
            options |= {"socket_timeout": settings.broker_timeout, "socket_connect_timeout": settings.broker_timeout}
        self.storage = storage.storage_from_string(url, **options)
        self.limiter = strategies.SlidingWindowCounterRateLimiter(self.storage)

    def _wait(self, client: str) -> float:
        reset = self.limiter.get_window_stats(self.item, NAMESPACE, client).reset_time
        return max(reset - time.time(), 1.0 / self.rate)

    def take(self, client: str) -> float:
        if self.rate <= 0:
            return 0.0
        try:
            return 0.0 if self.limiter.hit(self.item, NAMESPACE, client) else self._wait(client)
        except StorageError as exc:
            log.warning("rate limit store unreachable, request let through: %s", exc)
            return 0.0

    def exhausted(self, client: str) -> float:
        """Like :meth:`take` without counting the request: ``0.0`` if it would be let through."""
        if self.rate <= 0:
            return 0.0
        try:
            return 0.0 if self.limiter.test(self.item, NAMESPACE, client) else self._wait(client)
        except StorageError as exc:
            log.warning("rate limit store unreachable, request let through: %s", exc)
            return 0.0


def retry_after(wait: float) -> str:
    return str(max(1, math.ceil(wait)))
