"""Prometheus metrics of one server process, served at ``/metrics``.

Per request the endpoint pays two integer increments and a bisection (:meth:`Metrics.observe`):
the attempt counts and the latency histogram are plain Python numbers, turned into Prometheus
families only when Prometheus scrapes (prometheus-client's own ``Counter`` and ``Histogram`` take
a lock and walk the buckets on every call, several times the cost). Everything else — cache hits
and misses, rate-limit rejections, the Redis fallback, the connection record's queue depth — is
already counted by its owner as a plain integer and only read when Prometheus scrapes.

Each process has its own registry. With ``moeconnect serve --workers N`` every worker keeps its
own numbers and a scrape reaches whichever worker accepts the connection, so counters appear to
jump between scrapes; run one worker per instance (scale with instances) when you need exact
metrics, or scrape each instance separately. prometheus-client's multiprocess mode is not used: it
writes every sample to memory-mapped files, which the hot path should not pay for.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, disable_created_metrics
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
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
    and code
    not in {"HEADERS_TOO_LARGE", "MALFORMED_REQUEST", "REQUEST_TIMEOUT", "TOO_MANY_CONNECTIONS"}
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
        buffered: Callable[[], int | None] | None = None,
    ) -> None:
        self.cache = cache
        self.limiter = limiter
        # Set by whoever owns the connection record: returns the number of attempts waiting to
        # be written, or None when there is no record.
        self.queue_depth = queue_depth
        # Likewise: the rows in the record's bounded buffer (ConnectionRecorder.buffered).
        self.buffered = buffered
        self.registry = CollectorRegistry()
        # Attempts by outcome code, and the latency histogram's per-bucket (not cumulative)
        # counts, the last slot being +Inf; read by _StateCollector at scrape time.
        self.attempts: dict[str, int] = dict.fromkeys(_ENDPOINT_CODES, 0)
        self.buckets: list[int] = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        # Successes answered from the endpoint's memory, by where: "protocol" (before any ASGI
        # task, see http/protocol.py) or "asgi" (the endpoint's own warm path).
        self.warm: dict[str, int] = {"protocol": 0, "asgi": 0}
        # Refusals answered by the HTTP protocol, without an ASGI task (a repeat the cached
        # record refuses, once the change feed confirmed that record).
        self.protocol_refusals = 0
        self.registry.register(_StateCollector(self))
        ProcessCollector(registry=self.registry)

    def observe(self, code: str, seconds: float) -> None:
        """One answered attempt: its outcome code and how long it took."""
        attempts = self.attempts
        attempts[code] = attempts.get(code, 0) + 1
        # bisect_left: a value equal to a bound belongs to that bucket (Prometheus' "le").
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Reads the counters other parts keep, at scrape time only."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        metrics = self.metrics
        attempts = CounterMetricFamily(
            "moeconnect_attempts", "Test Connection attempts, by outcome code.", labels=["code"]
        )
        for code, count in list(metrics.attempts.items()):
            attempts.add_metric([code], count)
        yield attempts
        cumulative, total = [], 0
        for bound, count in zip(
            (*(str(b) for b in LATENCY_BUCKETS), "+Inf"), metrics.buckets, strict=True
        ):
            total += count
            cumulative.append((bound, total))
        yield HistogramMetricFamily(
            "moeconnect_request_duration_seconds",
            "Time from receiving a Test Connection request to sending its response.",
            buckets=cumulative,
            sum_value=metrics.latency_sum,
        )
        warm = CounterMetricFamily(
            "moeconnect_warm_answers",
            "Successes answered from memory (a repeat of a success against an unchanged "
            "record), by where they were answered: protocol or asgi.",
            labels=["via"],
        )
        for via, count in list(metrics.warm.items()):
            warm.add_metric([via], count)
        yield warm
        yield CounterMetricFamily(
            "moeconnect_protocol_refusals",
            "Refusals answered by the HTTP protocol without an ASGI task: repeats of a request "
            "the cached record refuses, once the change feed confirmed that record.",
            value=metrics.protocol_refusals,
        )
        cache = metrics.cache
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
        if self.metrics.buffered is not None:
            buffered = self.metrics.buffered()
            if buffered is not None:
                yield GaugeMetricFamily(
                    "moeconnect_record_buffered_rows",
                    "Rows in the connection record's bounded buffer (failures, 429s, new "
                    "aggregates, retries); when it is full, new attempts are dropped.",
                    value=buffered,
                )
