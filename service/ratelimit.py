"""Rate limiting per API key: a token bucket shared through the decision log's database.

Flask-Limiter keeps its counters in memory (one count per gunicorn worker, so N workers allow N
times the limit) or in Redis/Memcached/MongoDB, which this service does not otherwise need. The
database every worker and instance already shares holds the buckets instead
(``service.store.ratelimits``); each worker takes tokens from it in batches, so there is no
database write per request (see ``RateLimiter`` for the guarantee and the tolerance).

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
import threading
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
    remaining: int      # about how many more requests the key may make now
    allowed: bool
    reset: float        # seconds until the bucket is full again (refused: until the next token)

    def headers(self) -> dict[str, str]:
        reset = str(max(1, math.ceil(self.reset)))
        headers = {
            "RateLimit-Limit": str(self.rate.limit),
            "RateLimit-Remaining": str(max(0, self.remaining)),
            "RateLimit-Reset": reset,
            "RateLimit-Policy": f"{self.rate.limit};w={self.rate.period}",
        }
        if not self.allowed:
            headers["Retry-After"] = reset
        return headers


@dataclass
class _Lease:
    tokens: int         # taken from the shared bucket, not yet spent
    expires: float      # monotonic seconds; unspent tokens are dropped then
    shared_left: float  # the shared bucket's level after the take
    empty_until: float = 0.0  # Unix seconds: refused, the shared bucket has no token before this


class RateLimiter:
    """A token bucket per key, shared through the database; ``clock`` (Unix seconds) is
    injectable for tests.

    The bucket holds ``rate.limit`` tokens and refills at ``rate.limit / rate.period`` per second;
    a request spends one. A worker takes ``batch`` tokens at once from the shared bucket and
    spends them locally, so only one request in ``batch`` writes to the database, and drops what
    it has not spent after ``LEASE_SECONDS``. Guarantee, across every worker and instance on the
    database: in any span of t seconds a key is admitted at most
    ``limit + limit / period × (t + LEASE_SECONDS)`` requests (a fixed window let ``2 × limit``
    through in an instant across its edge); with ``batch`` 1 (sign-in) the bucket is exact:
    ``limit + limit / period × t``. Tolerance the other way: a worker may refuse while other
    workers hold up to ``batch - 1`` unspent tokens each, for at most ``LEASE_SECONDS``."""

    LEASE_SECONDS = 1.0

    def __init__(self, counters: CounterStore, rate: Rate, clock: Callable[[], float] = time.time,
                 batch: int = 1, monotonic: Callable[[], float] = time.monotonic):
        self.counters = counters
        self.rate = rate
        self.clock = clock
        self.monotonic = monotonic
        self.batch = max(1, min(batch, rate.limit))
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_api(cls, counters: CounterStore, rate: Rate, **kwargs) -> "RateLimiter":
        """Batches of what the key's rate refills in one lease (1 for slow rates)."""
        batch = math.floor(rate.limit / rate.period * cls.LEASE_SECONDS)
        return cls(counters, rate, batch=batch, **kwargs)

    @property
    def per_second(self) -> float:
        return self.rate.limit / self.rate.period

    def hit(self, key_id: str) -> Usage:
        with self._lock:
            lease = self._leases.get(key_id)
            if lease is not None:
                if lease.tokens > 0 and self.monotonic() < lease.expires:
                    lease.tokens -= 1
                    return self._usage(lease, True)
                if self.clock() < lease.empty_until:
                    # Refused a moment ago, and the bucket cannot have refilled a token since:
                    # refused again without asking the database.
                    return self._usage(lease, False)
        # From the shared bucket (outside the lock: a database round trip). A lease that is
        # replaced here loses its unspent tokens, which only ever errs towards refusing.
        now = self.clock()
        take = self.counters.take(key_id, self.batch, self.rate.limit, self.per_second, now)
        if take.granted == 0 and self.batch > 1:
            # Near the limit: what is left is handed out one token at a time, exactly.
            take = self.counters.take(key_id, 1, self.rate.limit, self.per_second, now)
        lease = _Lease(max(0, take.granted - 1), self.monotonic() + self.LEASE_SECONDS, take.left,
                       0.0 if take.granted else now + (1 - take.left) / self.per_second)
        with self._lock:
            self._leases[key_id] = lease
            if len(self._leases) > 10_000:  # idle keys' leases have expired anyway
                self._leases.clear()
        return self._usage(lease, take.granted > 0)

    def _usage(self, lease: _Lease, allowed: bool) -> Usage:
        left = lease.shared_left + lease.tokens
        if allowed:
            reset = (self.rate.limit - left) / self.per_second
        else:
            reset = max(lease.empty_until - self.clock(), 0.0)
        return Usage(self.rate, math.floor(left), allowed, reset)

    def check(self, key_id: str) -> None:
        """Count this request; ServiceError 429 when the key is over its rate. The usage is kept on
        ``g`` so that the response, whatever it is, carries the RateLimit headers."""
        usage = self.hit(key_id)
        g.rate_limit = usage
        if not usage.allowed:
            raise ServiceError(429, f"This API key has used up its rate of {usage.rate.limit} requests per "
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
    app.extensions["limiter"] = RateLimiter.for_api(store.counters, rate)

    @app.after_request
    def _rate_limit_headers(response: Response) -> Response:
        usage = g.get("rate_limit")
        if usage is not None:
            for name, value in usage.headers().items():
                response.headers.setdefault(name, value)
        return response
