"""Prometheus metrics of one server process, served at ``/metrics``.

Per request the endpoint pays one counter increment and one histogram observation
(:meth:`Metrics.observe`). Everything else — cache hits and misses, rate-limit rejections, the
Redis fallback, the connection record's queue depth — is already counted by its owner as a plain
integer and only read when Prometheus scrapes.

Each process has its own registry. With ``moeconnect serve --workers N`` every worker keeps its
own numbers and a scrape reaches whichever worker accepts the connection, so counters appear to
jump between scrapes; run one worker per instance (scale with instances) when you need exact
metrics, or scrape each instance separately. prometheus-client's multiprocess mode is not used: it
writes every sample to memory-mapped files, which the hot path should not pay for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .cache import CredentialCache
from .errors import CATALOGUE, STALE_SUCCESS, SUCCESS
from .ratelimit import RateLimiter

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# The codes the endpoint itself answers with; their series exist from the start, at zero.
_ENDPOINT_CODES = tuple(
    code
    for code in (SUCCESS, STALE_SUCCESS, *CATALOGUE)
    if code
    not in {"NOT_FOUND", "UNAUTHORIZED", "VALIDATION_ERROR", "CONFLICT", "RESOURCE_NOT_FOUND"}
    and code not in {"HEADERS_TOO_LARGE", "MALFORMED_REQUEST"}
)
# `*_created` timestamps double the output and say nothing a scrape needs.
disable_created_metrics()  # type: ignore[no-untyped-call]
# The endpoint answers in well under a millisecond from the cache; the buckets resolve that range
# and still show store round trips and stalls.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class Metrics:
    """The metrics registry of this process and the endpoint's per-request hook."""

    def __init__(
        self,
        cache: CredentialCache,
        limiter: RateLimiter | None = None,
        queue_depth: Callable[[], int | None] | None = None,
    ) -> None:
        self.cache = cache
        self.limiter = limiter
        # Set by whoever owns the connection record: returns the number of attempts waiting to
        # be written, or None when there is no record.
        self.queue_depth = queue_depth
        self.registry = CollectorRegistry()
        self.attempts = Counter(
            "moeconnect_attempts",
            "Test Connection attempts, by outcome code.",
            ["code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "moeconnect_request_duration_seconds",
            "Time from receiving a Test Connection request to sending its response.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._by_code = {code: self.attempts.labels(code=code) for code in _ENDPOINT_CODES}
        self._observe = self.latency.observe
        self.registry.register(_StateCollector(self))
        ProcessCollector(registry=self.registry)

    def observe(self, code: str, seconds: float) -> None:
        """One answered attempt: its outcome code and how long it took."""
        child = self._by_code.get(code)
        if child is None:
            child = self._by_code[code] = self.attempts.labels(code=code)
        child.inc()
        self._observe(seconds)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Reads the counters other parts keep, at scrape time only."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        cache = self.metrics.cache
        yield CounterMetricFamily(
            "moeconnect_cache_hits", "Credential cache lookups answered.", value=cache.hits
        )
        yield CounterMetricFamily(
            "moeconnect_cache_misses", "Credential cache lookups missed.", value=cache.misses
        )
        yield GaugeMetricFamily(
            "moeconnect_cache_entries", "Workspaces in the credential cache.", value=len(cache)
        )
        limiter = self.metrics.limiter
        if limiter is not None:
            rejected = CounterMetricFamily(
                "moeconnect_ratelimit_rejections",
                "Attempts refused with 429, by the limit that was exhausted.",
                labels=["limit"],
            )
            for name, count in limiter.rejections.items():
                rejected.add_metric([name], count)
            yield rejected
            yield GaugeMetricFamily(
                "moeconnect_ratelimit_fallback",
                "1 while Redis is configured but unreachable and limits are counted per process.",
                value=1 if limiter.using_fallback else 0,
            )
            yield CounterMetricFamily(
                "moeconnect_ratelimit_fallbacks",
                "Times Redis became unreachable and the limits fell back to memory.",
                value=limiter.fallbacks,
            )
        if self.metrics.queue_depth is not None:
            depth = self.metrics.queue_depth()
            if depth is not None:
                yield GaugeMetricFamily(
                    "moeconnect_record_queue_depth",
                    "Connection attempts waiting to be written to the connection record.",
                    value=depth,
                )
