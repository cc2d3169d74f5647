"""``/metrics`` through a real server: what the endpoint did shows up, in Prometheus' format."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from moeconnect.testing import MoeconnectServer

from .helpers import PATH, attempt


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_count_attempts_latency_cache_limits_and_the_record_queue(
    server: MoeconnectServer,
) -> None:
    workspace_id, key = server.workspace_with_key()
    # Written by this process: let the server's change feed (polled every 0.25 s) report it
    # first, so it can't drop the record between the requests below.
    time.sleep(0.6)
    with httpx.Client(base_url=server.base_url) as client:
        for _ in range(3):
            assert client.post(PATH, **attempt(workspace_id, key)).status_code == 200
        assert client.post(PATH, **attempt(workspace_id, "wrong-key-123")).status_code == 401
        assert client.get(PATH).status_code == 405
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)

    def value(name: str, **labels: str) -> float:
        return found[(name, tuple(sorted(labels.items())))]

    assert value("moeconnect_attempts_total", code="SUCCESS") == 3
    assert value("moeconnect_attempts_total", code="KEY_MISMATCH") == 1
    assert value("moeconnect_attempts_total", code="METHOD_NOT_ALLOWED") == 1
    assert value("moeconnect_attempts_total", code="RATE_LIMITED") == 0  # present from the start
    assert value("moeconnect_request_duration_seconds_count") == 5
    assert value("moeconnect_request_duration_seconds_bucket", le="+Inf") == 5
    # The first success loads the record; the two repeats are answered by the HTTP protocol.
    assert value("moeconnect_warm_answers_total", via="protocol") == 2
    assert value("moeconnect_warm_answers_total", via="asgi") == 0
    assert value("moeconnect_cache_hits_total") >= 2
    assert value("moeconnect_cache_misses_total") >= 1
    assert value("moeconnect_ratelimit_rejections_total", limit="failed_per_ip") == 0
    assert value("moeconnect_ratelimit_fallback") == 0
    assert value("moeconnect_record_queue_depth") >= 0
    assert value("moeconnect_record_buffered_rows") >= 0
    assert value("process_resident_memory_bytes") > 0
