"""The limiter's rules, in-process (fast), and its headers and flags through a real server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from moeconnect.cache import CredentialCache
from moeconnect.config import ConfigError
from moeconnect.metrics import Metrics
from moeconnect.ratelimit import LimitConfig, LocalWindows, RateLimiter, parse_limit
from moeconnect.testing import MoeconnectServer, free_port

from .helpers import PATH, attempt, fresh_loopback, sync_client_from


def limiter(**values: str) -> RateLimiter:
    return RateLimiter(LimitConfig.from_strings(values))


def headers(pairs: list[tuple[bytes, bytes]]) -> dict[str, int]:
    return {name.decode(): int(value) for name, value in pairs}


def test_limits_parse_like_the_spec_says() -> None:
    item = parse_limit("30/minute")
    assert item is not None and item.amount == 30 and item.get_expiry() == 60
    assert parse_limit("off") is None and parse_limit("OFF") is None
    with pytest.raises(ConfigError, match="not a rate limit"):
        parse_limit("thirty per minute")
    with pytest.raises(ConfigError, match="MOECONNECT_LIMIT_PER_WORKSPACE"):
        LimitConfig.from_env({"MOECONNECT_LIMIT_PER_WORKSPACE": "lots"})
    config = LimitConfig.from_env({})
    assert config.describe() == {
        "failed_per_ip": "30 per 1 minute",
        "failed_per_workspace": "100 per 1 minute",
        "per_workspace": "600 per 1 minute",
        "trusted_for": "1d",
        "ipv6_prefix": "/64",
    }


def test_failures_count_per_ip_and_successes_do_not() -> None:
    async def scenario() -> None:
        rl = limiter(failed_per_ip="3/minute")
        for _ in range(10):  # successes never exhaust a failure limit
            await rl.settle(await rl.admit("10.0.0.1", "W1", checked=True), "SUCCESS")
        for expected in (2, 1, 0):
            admission = await rl.admit("10.0.0.1", "W1", checked=True)
            assert admission.blocked is None
            got = headers(await rl.settle(admission, "KEY_MISMATCH"))
            assert got["x-ratelimit-remaining"] == expected
        refused = await rl.admit("10.0.0.1", "W2", checked=True)
        assert refused.blocked is not None and refused.blocked.name == "failed_per_ip"
        assert 55 <= refused.retry_after <= 60
        assert refused.describe() == "3 failed attempts from this IP address per minute"
        assert refused.blocked_workspace() is None  # an IP limit is not the workspace's news
        # A refused attempt is not counted again, and other IPs are untouched.
        await rl.settle(refused, "RATE_LIMITED")
        assert (await rl.admit("10.0.0.2", "W1", checked=True)).blocked is None
        assert rl.rejections["failed_per_ip"] == 1

    asyncio.run(scenario())


def test_workspace_limits_count_all_ips_together() -> None:
    async def scenario() -> None:
        rl = limiter(failed_per_workspace="4/minute", per_workspace="6/minute")
        for i in range(4):
            await rl.settle(await rl.admit(f"10.0.1.{i}", "W", checked=True), "KEY_REVOKED")
        blocked = await rl.admit("10.0.2.1", "W", checked=True)
        assert blocked.blocked is not None and blocked.blocked.name == "failed_per_workspace"
        assert blocked.blocked_workspace() == "W"

        rl = limiter(per_workspace="5/minute")
        for i in range(5):
            await rl.settle(await rl.admit(f"10.0.3.{i}", "X", checked=True), "SUCCESS")
        blocked = await rl.admit("10.0.4.1", "X", checked=True)
        assert blocked.blocked is not None and blocked.blocked.name == "per_workspace"

    asyncio.run(scenario())


def test_an_unchecked_admission_is_never_refused_and_outages_are_not_counted() -> None:
    """``checked=False`` never refuses (the endpoint counts refusals before row 5 with
    ``admit_refusal``, tested in tests/http/test_refusal_flood.py)."""

    async def scenario() -> None:
        rl = limiter(failed_per_ip="1/minute")
        await rl.settle(await rl.admit("10.0.0.9", "W", checked=True), "KEY_MISMATCH")
        early = await rl.admit("10.0.0.9", None, checked=False)  # e.g. a 405
        assert early.blocked is None
        assert headers(await rl.settle(early, "METHOD_NOT_ALLOWED"))["x-ratelimit-remaining"] == 0
        # Store outages are not the caller's failures.
        rl = limiter(failed_per_ip="1/minute")
        for _ in range(3):
            await rl.settle(await rl.admit("10.0.0.8", "W", checked=True), "STORE_UNAVAILABLE")
        assert (await rl.admit("10.0.0.8", "W", checked=True)).blocked is None

    asyncio.run(scenario())


def test_the_headers_describe_the_tightest_limit() -> None:
    async def scenario() -> None:
        rl = limiter(failed_per_ip="30/minute", per_workspace="5/hour")
        got = headers(await rl.settle(await rl.admit("10.0.0.1", "W", checked=True), "SUCCESS"))
        assert got == {
            "x-ratelimit-limit": 5,
            "x-ratelimit-remaining": 4,
            "x-ratelimit-reset": 3600,
        }

    asyncio.run(scenario())


def test_local_windows_expire_and_sweep() -> None:
    windows = LocalWindows()
    now = time.time()
    assert windows.add("a", 1, now) == 1
    assert windows.add("a", 1, now + 0.5) == 2
    assert windows.window("a", now + 0.9) == (2, now + 1)
    assert windows.window("a", now + 1.0) == (0, now + 1.0)  # the window is over
    assert windows.add("a", 1, now + 1.1) == 1  # a new window opens
    windows.add("b", 1, now)
    windows.add("c", 1, now + windows.SWEEP_EVERY + 5)  # triggers a sweep of expired keys
    assert len(windows) == 1


def test_an_unreachable_redis_falls_back_to_memory_and_shows_in_metrics() -> None:
    async def scenario() -> None:
        dead = f"redis://127.0.0.1:{free_port()}/0"
        rl = RateLimiter(LimitConfig.from_strings({"failed_per_ip": "2/minute"}), dead)
        metrics = Metrics(CredentialCache(), rl)
        for _ in range(2):
            await rl.settle(await rl.admit("10.0.0.1", "W", checked=True), "KEY_MISMATCH")
        assert (await rl.admit("10.0.0.1", "W", checked=True)).blocked is not None
        assert rl.backend == "memory (Redis unreachable)" and rl.fallbacks == 1
        text = metrics.render().decode()
        assert "moeconnect_ratelimit_fallback 1.0" in text
        assert 'moeconnect_ratelimit_rejections_total{limit="failed_per_ip"} 1.0' in text
        await rl.close()

    asyncio.run(scenario())


def test_every_endpoint_response_carries_the_rate_limit_headers(tmp_path: Path) -> None:
    with MoeconnectServer(workdir=tmp_path, args=["--limit-failed-per-ip", "7/minute"]) as server:
        workspace_id, key = server.workspace_with_key()
        ip = fresh_loopback()
        unknown_region = attempt(workspace_id, key)
        unknown_region["json"]["region"] = "99"
        with sync_client_from(ip, server.base_url) as client:
            answers = [
                client.post(PATH, **attempt(workspace_id, key)),  # 200
                client.post(PATH, **attempt(workspace_id, key + "x")),  # 401
                client.get(PATH),  # 405
                client.post(PATH, content=b"x", headers={"Content-Type": "text/plain"}),  # 415
                client.post(PATH, json={}),  # 401 AUTH_MISSING
                client.post(PATH, **unknown_region),  # 400
            ]
            statuses = [a.status_code for a in answers]
            assert statuses == [200, 401, 405, 415, 401, 400]
            for answer in answers:
                assert answer.headers["x-ratelimit-limit"] == "7"
                assert 0 <= int(answer.headers["x-ratelimit-reset"]) <= 60
            # Five failures counted against the address: the 401, the 400, and the refusals
            # made before row 5 (405, 415, AUTH_MISSING) too (SPEC section 9).
            assert answers[-1].headers["x-ratelimit-remaining"] == "2"
        assert "x-ratelimit-limit" not in httpx.get(server.base_url + "/healthz").headers


def test_serve_refuses_a_bad_limit() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "moeconnect", "serve", "--limit-failed-per-ip", "many"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--limit-failed-per-ip" in result.stderr and "not a rate limit" in result.stderr


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--limit-trusted-for", "soon", "24h"),
        ("--limit-trusted-for", "10s", "under a minute"),
        ("--limit-ipv6-prefix", "129", "1 to 128"),
    ],
)
def test_serve_refuses_a_bad_limit_setting(flag: str, value: str, says: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "moeconnect", "serve", flag, value],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert flag in result.stderr and says in result.stderr


def test_limit_settings_from_the_environment() -> None:
    config = LimitConfig.from_env(
        {"MOECONNECT_LIMIT_TRUSTED_FOR": "7d", "MOECONNECT_LIMIT_IPV6_PREFIX": "/56"}
    )
    assert config.trusted_for == 7 * 86400 and config.ipv6_prefix == 56
    assert LimitConfig.from_env({"MOECONNECT_LIMIT_TRUSTED_FOR": "off"}).trusted_for == 0
    with pytest.raises(ConfigError, match="MOECONNECT_LIMIT_TRUSTED_FOR"):
        LimitConfig.from_env({"MOECONNECT_LIMIT_TRUSTED_FOR": "a while"})


def test_pass_known_does_what_admit_and_settle_do() -> None:
    """The endpoint's in-memory shortcut counts and reports exactly like the full path."""

    async def scenario() -> None:
        config = {
            "failed_per_ip": "5/minute",
            "failed_per_workspace": "4/minute",
            "per_workspace": "6/minute",
        }
        full, short = limiter(**config), limiter(**config)
        assert short.in_memory
        plan = ["SUCCESS", "KEY_MISMATCH", "SUCCESS", "KEY_MISMATCH", "SUCCESS"]
        for code in plan:
            admission = await full.admit("10.0.0.1", "W1", checked=True)
            assert admission.blocked is None
            expected = headers(await full.settle(admission, code))
            got = short.pass_known("10.0.0.1", "W1", failed=code != "SUCCESS")
            assert got is not None and headers(got) == expected
        # per_workspace (6) is now at 5: one more success passes, the next is for the full path,
        # and the shortcut counts nothing when it declines.
        assert short.pass_known("10.0.0.1", "W1", failed=False) is not None
        assert short.pass_known("10.0.0.1", "W1", failed=False) is None
        assert short.pass_known("10.0.0.1", "W1", failed=False) is None
        refused = await short.admit("10.0.0.2", "W1", checked=True)
        assert refused.blocked is not None and refused.blocked.name == "per_workspace"
        # 10.0.0.1 succeeded for W1: it is held to W1's successes (4 of 6) instead.
        assert (await short.admit("10.0.0.1", "W1", checked=True)).blocked is None
        # Another workspace from the same IP: only the IP's failures so far apply.
        other = short.pass_known("10.0.0.1", "W2", failed=True)
        assert other is not None and headers(other)["x-ratelimit-remaining"] == 2

    asyncio.run(scenario())


def test_memory_counters_are_keyed_by_the_identifier_itself() -> None:
    """A workspace's counter costs no key string of its own (a million workspaces: ~17 MB)."""

    async def scenario() -> None:
        rl = limiter(failed_per_ip="5/minute", failed_per_workspace="4/minute", per_workspace="off")
        workspace = "".join(["W", "42"])  # a string object of its own, as a request's is
        assert rl.pass_known("10.0.0.1", workspace, failed=True) is not None
        await rl.settle(await rl.admit(workspace, workspace, checked=True), "KEY_MISMATCH")
        held = [key for table in rl.local._tables for key in table]
        assert any(key is workspace for key in held)
        # The same string as an IP and as a workspace: separate limits, separate counters.
        per_ip = await rl.admit(workspace, None, checked=True)
        assert [w.remaining for w in per_ip.windows] == [4]
        per_workspace = await rl.admit(None, workspace, checked=True)
        assert [w.remaining for w in per_workspace.windows] == [2]

    asyncio.run(scenario())


def test_pass_known_counts_nothing_when_it_declines() -> None:
    """A later limit found exhausted takes back what earlier ones counted: the full path, which
    then answers, counts the attempt once."""
    rl = limiter(failed_per_ip="10/minute", failed_per_workspace="2/minute", per_workspace="off")
    for i in range(2):
        assert rl.pass_known(f"10.0.5.{i}", "W", failed=True) is not None
    assert rl.pass_known("10.0.5.9", "W", failed=True) is None
    assert rl.local.window("10.0.5.9", time.time(), rl._by_ip[0][4])[0] == 0


def test_ipv6_clients_share_their_networks_budget_and_invalid_usernames_one_bucket() -> None:
    async def scenario() -> None:
        rl = limiter(failed_per_ip="2/minute", failed_per_workspace="3/minute")
        for address in ("2001:db8::1", "2001:db8::2"):
            await rl.settle(await rl.admit(address, "W", checked=True), "KEY_MISMATCH")
        assert (await rl.admit("2001:db8::ffff:1", "V", checked=True)).blocked is not None
        assert (await rl.admit("2001:db8:0:1::1", "V", checked=True)).blocked is None
        # A key as the username, or anything that is not a workspace ID: one shared bucket,
        # and a 429 of that bucket names no workspace in the record.
        from moeconnect.keys import generate_key

        for username in (generate_key("data"), "not an id", "x" * 65):
            admission = await rl.admit(f"10.0.6.{len(username)}", username, checked=True)
            assert all(
                w.ident in {"#invalid", f"10.0.6.{len(username)}"} for w in admission.windows
            )
            await rl.settle(admission, "WORKSPACE_NOT_FOUND")
        refused = await rl.admit("10.0.7.1", "another id?", checked=True)
        assert refused.blocked is not None and refused.blocked.name == "failed_per_workspace"
        assert refused.blocked_workspace() is None

    asyncio.run(scenario())
