"""Must-show 2: limits shared by instances through Redis, and answering on when Redis is gone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import redis

from moeconnect.testing import MoeconnectServer

from .. import services, throwaway
from .helpers import PATH, attempt, fresh_loopback, sync_client_from


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    return tmp_path / "a", tmp_path / "b"


def _metric(base_url: str, name: str) -> float:
    for line in httpx.get(base_url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_attempts_split_between_two_instances_are_counted_together(
    tmp_path: Path, redis_url: str
) -> None:
    limits = {
        "MOECONNECT_LIMIT_FAILED_PER_IP": "10/minute",
        "MOECONNECT_LIMIT_PER_WORKSPACE": "30/minute",
    }
    db_url = f"sqlite:///{tmp_path / 'shared.db'}"
    args = ["--redis", redis_url]
    dir_a, dir_b = _dirs(tmp_path)
    with (
        MoeconnectServer(db_url=db_url, env=limits, args=args, workdir=dir_a) as a,
        MoeconnectServer(db_url=db_url, env=limits, args=args, workdir=dir_b) as b,
    ):
        # Failed attempts per IP: ten failures alternating between the instances (each saw only
        # five) exhaust the IP's limit on both.
        workspace_id, key = a.workspace_with_key()
        ip = fresh_loopback()  # its counter in the shared Redis starts at zero
        wrong = attempt(workspace_id, key + "x")
        with sync_client_from(ip, a.base_url) as to_a, sync_client_from(ip, b.base_url) as to_b:
            for i in range(10):
                response = (to_a if i % 2 else to_b).post(PATH, **wrong)
                assert response.status_code == 401, response.text
                assert response.headers["x-ratelimit-remaining"] == str(9 - i)
            for client in (to_a, to_b):
                refused = client.post(PATH, **wrong)
                assert refused.status_code == 429
                assert refused.json()["error"]["code"] == "RATE_LIMITED"
                assert 1 <= int(refused.headers["retry-after"]) <= 60
                # The IP is refused even with the right key, for the rest of the window.
                assert client.post(PATH, **attempt(workspace_id, key)).status_code == 429
        # Another address is unaffected on both instances.
        with sync_client_from(fresh_loopback(), b.base_url) as other:
            assert other.post(PATH, **attempt(workspace_id, key)).status_code == 200

        # All attempts per workspace (a new workspace, a fresh counter): 30 successes from
        # different addresses, alternating instances, and the 31st is refused on either.
        workspace_id, key = b.workspace_with_key()
        codes = []
        for i in range(32):
            with sync_client_from(fresh_loopback(), (a if i % 2 else b).base_url) as client:
                codes.append(client.post(PATH, **attempt(workspace_id, key)).status_code)
        assert codes == [200] * 30 + [429] * 2
        assert _metric(a.base_url, "moeconnect_ratelimit_fallback") == 0
        assert _metric(b.base_url, "moeconnect_ratelimit_fallback") == 0


def test_requests_are_answered_while_redis_is_down_and_limits_return_to_redis(
    tmp_path: Path,
) -> None:
    services.need_tool(throwaway.redis_bin() is not None, "redis-server is not installed")
    with throwaway.ThrowawayRedis() as own_redis:
        limits = {"MOECONNECT_LIMIT_FAILED_PER_IP": "5/minute"}
        with MoeconnectServer(
            workdir=tmp_path, env=limits, args=["--redis", own_redis.url]
        ) as server:
            workspace_id, key = server.workspace_with_key()
            base = server.base_url
            ip = "127.0.0.9"
            ok, wrong = attempt(workspace_id, key), attempt(workspace_id, key + "x")
            with sync_client_from(ip, base) as client:
                assert client.post(PATH, **ok).status_code == 200
                assert client.post(PATH, **wrong).status_code == 401
            probe = redis.Redis.from_url(own_redis.url)
            assert any(b"127.0.0.9" in k for k in probe.keys("moeconnect:limits:*"))
            probe.close()

            own_redis.stop()  # mid-run
            statuses = []
            with sync_client_from(ip, base) as client:
                for _ in range(3):
                    statuses.append(client.post(PATH, **ok).status_code)
                # Limits still hold, now per process: 1 failure counted in Redis is gone, so
                # five more failures pass and the sixth is refused.
                failures = [client.post(PATH, **wrong).status_code for _ in range(6)]
            assert statuses == [200, 200, 200]
            assert failures == [401] * 5 + [429]
            assert _metric(base, "moeconnect_ratelimit_fallback") == 1
            assert _metric(base, "moeconnect_ratelimit_fallbacks_total") == 1
            assert "Redis is unreachable" in server.logs()

            own_redis.start()  # the same port: the limiter finds it again
            deadline = time.monotonic() + 10
            while _metric(base, "moeconnect_ratelimit_fallback") != 0:
                assert time.monotonic() < deadline, "limits did not return to Redis"
                time.sleep(0.2)
            with sync_client_from("127.0.0.10", base) as client:
                assert client.post(PATH, **wrong).status_code == 401
            probe = redis.Redis.from_url(own_redis.url)
            assert any(b"127.0.0.10" in k for k in probe.keys("moeconnect:limits:*"))
            probe.close()
            assert "Redis answers again" in server.logs()


def test_unreachable_redis_from_the_start_still_answers(tmp_path: Path) -> None:
    from moeconnect.testing import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with MoeconnectServer(workdir=tmp_path, args=["--redis", dead]) as server:
        workspace_id, key = server.workspace_with_key()

        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
                responses = await asyncio.gather(
                    *(client.post(PATH, **attempt(workspace_id, key)) for _ in range(20))
                )
            return [r.status_code for r in responses]

        assert asyncio.run(burst()) == [200] * 20
