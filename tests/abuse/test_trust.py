"""The limiter's trust in clients that succeeded recently, and its bounds (in-process, fast)."""

from __future__ import annotations

import asyncio
import tracemalloc

from moeconnect.ratelimit import LimitConfig, RateLimiter
from moeconnect.trust import BYTES_PER_ENTRY, TrustedClients


def test_the_trusted_record_is_bounded_per_workspace_and_in_total() -> None:
    trust = TrustedClients(3600.0, per_workspace=4, total=10)
    for i in range(6):
        trust.mark("W", f"10.0.0.{i}", 6000.0 + i)
    assert len(trust) == 4
    assert not trust.trusted("W", "10.0.0.0", 6010.0)  # the least recent made way
    assert trust.trusted("W", "10.0.0.5", 6010.0)
    for n in range(10):
        trust.mark(f"V{n}", "10.0.1.1", 6100.0 + n)
        assert len(trust) <= 10
    # Past the total, the workspaces recorded least recently were forgotten, W first.
    assert not trust.trusted("W", "10.0.0.5", 6110.0)
    assert trust.trusted("V9", "10.0.1.1", 6110.0)
    assert not trust.trusted("V9", "10.0.1.2", 6110.0)
    assert not trust.trusted("V9", "10.0.1.1", 6109.0 + 3600.0 + 60.0)  # expired
    trust.sweep(6109.0 + 3600.0 + 60.0)
    assert len(trust) == 0
    # Refreshing is due at most every five minutes, so successes rarely write anything.
    trust.mark("V9", "10.0.1.1", 9000.0)
    assert not trust.due("V9", "10.0.1.1", 9010.0)
    assert trust.due("V9", "10.0.1.1", 9000.0 + 6 * 60)
    assert trust.due("V9", "10.0.1.2", 9010.0)


def test_the_trusted_record_stays_within_its_stated_bytes() -> None:
    """Worst case: every entry a workspace of its own, 64-character IDs, IPv6 /64 buckets."""
    total = 5_000
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    trust = TrustedClients(86400.0, total=total)
    for n in range(total * 2):
        workspace = f"{n:064d}"
        trust.mark(workspace, f"2001:db8:{n % 65536:x}:{n // 65536:x}::/64", float(n))
    used = tracemalloc.get_traced_memory()[1] - before  # the peak, when the table was full
    tracemalloc.stop()
    assert total // 2 <= len(trust) <= total
    print(f"\nat most {total:,} trusted entries: {used:,} bytes, {used / total:.0f} per entry")
    assert used <= total * BYTES_PER_ENTRY


def test_a_trusted_client_is_served_past_spent_workspace_budgets_not_its_ips() -> None:
    async def scenario() -> None:
        rl = RateLimiter(
            LimitConfig.from_strings(
                {
                    "failed_per_ip": "3/minute",
                    "failed_per_workspace": "5/minute",
                    "per_workspace": "8/minute",
                }
            )
        )
        await rl.settle(await rl.admit("10.0.0.1", "W", checked=True), "SUCCESS")
        for i in range(5):  # strangers spend the failure budget
            await rl.settle(await rl.admit(f"10.9.0.{i}", "W", checked=True), "KEY_MISMATCH")
        stranger = await rl.admit("10.9.1.1", "W", checked=True)
        assert stranger.blocked is not None and stranger.blocked.name == "failed_per_workspace"
        owner = await rl.admit("10.0.0.1", "W", checked=True)
        assert owner.blocked is None
        assert [w.name for w in owner.view] == ["failed_per_ip"]  # what its headers show
        assert rl.pass_known("10.0.0.1", "W", failed=False) is None  # the full path decides
        # The owner's address still meets its IP's limit, like any other.
        for _ in range(3):
            await rl.settle(await rl.admit("10.0.0.1", "W", checked=True), "KEY_MISMATCH")
        assert (await rl.admit("10.0.0.1", "W", checked=True)).blocked is not None
        # All attempts per workspace: strangers spending it don't refuse a trusted client.
        rl = RateLimiter(LimitConfig.from_strings({"per_workspace": "4/minute"}))
        assert rl.pass_known("10.0.0.2", "X", failed=False) is not None  # the warm path trusts
        for i in range(10):
            await rl.settle(await rl.admit(f"10.9.2.{i}", "X", checked=True), "KEY_MISMATCH")
        assert (await rl.admit("10.9.3.1", "X", checked=True)).blocked is not None
        assert (await rl.admit("10.0.0.2", "X", checked=True)).blocked is None
        # Trust switched off: a spent budget refuses everyone, as before.
        rl = RateLimiter(
            LimitConfig.from_strings({"failed_per_workspace": "2/minute", "trusted_for": "off"})
        )
        await rl.settle(await rl.admit("10.0.0.3", "Y", checked=True), "SUCCESS")
        for i in range(2):
            await rl.settle(await rl.admit(f"10.9.4.{i}", "Y", checked=True), "KEY_MISMATCH")
        assert (await rl.admit("10.0.0.3", "Y", checked=True)).blocked is not None
        # A client trusted for one workspace is a stranger to another.
        rl = RateLimiter(LimitConfig.from_strings({"failed_per_workspace": "1/minute"}))
        await rl.settle(await rl.admit("10.0.0.4", "Z1", checked=True), "SUCCESS")
        await rl.settle(await rl.admit("10.9.5.1", "Z2", checked=True), "KEY_MISMATCH")
        assert (await rl.admit("10.0.0.4", "Z2", checked=True)).blocked is not None

    asyncio.run(scenario())
