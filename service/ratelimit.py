"""Rate limiting per API key: a fixed window counted in the decision log's database.

Flask-Limiter keeps its counters in memory (one count per gunicorn worker, so N workers allow N
times the limit) or in Redis/Memcached/MongoDB, which this service does not otherwise need. The
database every worker and instance already shares holds the counters instead
(``service.store.ratelimits``): one atomic upsert per request.

The limit applies where ``service.auth.require_scope`` admits a key, i.e. to every ``/v1``
operation; health, metrics, the docs and CDS Hooks (JWT, not keys) are not counted. Every
counted response carries ``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset``
(seconds) and ``RateLimit-Policy`` (IETF draft "RateLimit header fields for HTTP"); a refusal is
429 with ``Retry-After``. When the database cannot count, the request is refused with 503 like
any other request that needs the log (fail closed), never let through uncounted, never a 500.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Callable

from flask import Flask, Response, g

from service.errors import ServiceError
from service.store.base import CounterStore, Store

_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d+)?\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)
_OFF = ("", "0", "off", "none", "false", "no")


@dataclass(frozen=True)
class Rate:
    limit: int  # requests
    period: int  # seconds

    def __str__(self) -> str:
        return f"{self.limit} per {self.period} s"


def parse_rate(text: str) -> Rate | None:
    """``"600/minute"``, ``"10 per second"``, ``"1000/5minutes"``; None for "0"/"off" (no limit).
    ValueError for anything else."""
    if text.strip().lower() in _OFF:
        return None
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"expected a rate like 600/minute (or 0/off), got {text!r}")
    limit, count, unit = int(match[1]), int(match[2] or 1), match[3].lower()
    if limit == 0:
        return None
    if count == 0:
        raise ValueError(f"the period of {text!r} is zero")
    return Rate(limit, count * _PERIODS[unit])


@dataclass(frozen=True)
class Usage:
    rate: Rate
    count: int
    reset: float  # seconds until the window ends

    @property
    def allowed(self) -> bool:
        return self.count <= self.rate.limit

    def headers(self) -> dict[str, str]:
        reset = str(max(1, math.ceil(self.reset)))
        headers = {
            "RateLimit-Limit": str(self.rate.limit),
            "RateLimit-Remaining": str(max(0, self.rate.limit - self.count)),
            "RateLimit-Reset": reset,
            "RateLimit-Policy": f"{self.rate.limit};w={self.rate.period}",
        }
        if not self.allowed:
            headers["Retry-After"] = reset
        return headers


class RateLimiter:
    """Counts requests per API key id; ``clock`` (Unix seconds) is injectable for tests."""

    def __init__(self, counters: CounterStore, rate: Rate, clock: Callable[[], float] = time.time):
        self.counters = counters
        self.rate = rate
        self.clock = clock

    def hit(self, key_id: str) -> Usage:
        now = self.clock()
        window_start = int(now // self.rate.period) * self.rate.period
        count = self.counters.hit(key_id, window_start)
        return Usage(self.rate, count, window_start + self.rate.period - now)

    def check(self, key_id: str) -> None:
        """Count this request; ServiceError 429 when the key is over its rate. The usage is kept on
        ``g`` so that the response, whatever it is, carries the RateLimit headers."""
        usage = self.hit(key_id)
        g.rate_limit = usage
        if not usage.allowed:
            raise ServiceError(429, f"This API key has made more than {usage.rate.limit} requests in "
                                f"{usage.rate.period} seconds; retry after {usage.headers()['Retry-After']} "
                                "seconds.", headers=usage.headers())


def check(app: Flask, key_id: str) -> None:
    """What ``service.auth`` calls once a key is admitted; nothing when limiting is off."""
    limiter = app.extensions.get("limiter")
    if limiter is not None:
        limiter.check(key_id)


def init_app(app: Flask, rate_text: str, store: Store) -> None:
    """Install the limiter from the configured rate (``SCREENING_RATE_LIMIT``). A malformed rate
    stops start-up with the variable named."""
    try:
        rate = parse_rate(rate_text)
    except ValueError as exc:
        raise SystemExit(f"configuration: SCREENING_RATE_LIMIT: {exc}") from None
    # service.api.openapi documents 429 on keyed operations only when limiting is on.
    app.config["RATELIMIT_ENABLED"] = rate is not None
    if rate is None:
        return
    app.extensions["limiter"] = RateLimiter(store.counters, rate)

    @app.after_request
    def _rate_limit_headers(response: Response) -> Response:
        usage = g.get("rate_limit")
        if usage is not None:
            for name, value in usage.headers().items():
                response.headers.setdefault(name, value)
        return response
