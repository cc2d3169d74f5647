"""The limiter's trust in clients that succeeded recently, and its bounds (in-process, fast)."""

from __future__ import annotations

import asyncio
import tracemalloc

from moeconnect.ratelimit import LimitConfig, RateLimiter
from moeconnect.trust import BYTES_PER_ENTRY, TrustedClients


def test_the_trusted_record_is_bounded_per_workspace_and_in_total() -> None:
    trust = TrustedClients(3600.0, per_workspace=4, total=10)
    for i in range(6):
        trust.mark("W", f"10.0.0.{i}", 100.0 + i)
    assert len(trust) == 4
    assert not trust.trusted("W", "10.0.0.0", 110.0)  # the least recent made way
    assert trust.trusted("W", "10.0.0.5", 110.0)
    for n in range(10):
        trust.mark(f"V{n}", "10.0.1.1", 200.0 + n)
    assert len(trust) == 10
    assert not trust.trusted("W", "10.0.0.5", 210.0)  # the least recently active workspace
    assert trust.trusted("V9", "10.0.1.1", 210.0)
    assert not trust.trusted("V9", "10.0.1.1", 200.0 + 9 + 3600.0)  # expired
    trust.sweep(200.0 + 5 + 3600.0)
    assert len(trust) == 4
    # Refreshing is due at most every few minutes, so successes rarely write anything.
    assert not trust.due("V9", "10.0.1.1", 210.0)
    assert trust.due("V9", "10.0.1.1", 209.0 + trust.refresh_every)


def test_the_trusted_record_stays_within_its_stated_bytes() -> None:
    """Worst case: every entry a workspace of its own, 64-character IDs, IPv6 /64 buckets."""
    total = 5_000
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    trust = TrustedClients(86400.0, total=total)
    for n in range(total * 2):
        workspace = f"{n:064d}"
        trust.mark(workspace, f"2001:db8:{n % 65536:x}:{n // 65536:x}::/64", float(n))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(trust) == total
    print(f"\n{total:,} trusted entries: {used:,} bytes, {used / total:.0f} per entry")
    assert used <= total * BYTES_PER_ENTRY


def test_a_trusted_client_is_served_past_spent_budgets_but_not_past_its_own() -> None:
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
        assert rl.pass_known("10.0.0.1", "W", failed=False) is None  # the full path decides
        # The owner's own failures still meet its IP's limit.
        for _ in range(3):
            await rl.settle(await rl.admit("10.0.0.1", "W", checked=True), "KEY_MISMATCH")
        assert (await rl.admit("10.0.0.1", "W", checked=True)).blocked is not None
        # All attempts per workspace: strangers can't spend what a trusted client is held to
        # (successes); a runaway integration can.
        rl = RateLimiter(LimitConfig.from_strings({"per_workspace": "4/minute"}))
        await rl.settle(await rl.admit("10.0.0.2", "X", checked=True), "SUCCESS")
        for i in range(10):
            await rl.settle(await rl.admit(f"10.9.2.{i}", "X", checked=True), "KEY_MISMATCH")
        assert (await rl.admit("10.9.3.1", "X", checked=True)).blocked is not None
        codes = []
        for _ in range(4):
            admission = await rl.admit("10.0.0.2", "X", checked=True)
            codes.append(admission.blocked is None)
            if admission.blocked is None:
                await rl.settle(admission, "SUCCESS")
        assert codes == [True, True, True, False]  # 1 + 3 successes: the 5th is refused
        assert "successful attempts for this workspace" in admission.describe()
        # Trust switched off: the spent budget refuses everyone, as before.
        rl = RateLimiter(
            LimitConfig.from_strings({"failed_per_workspace": "2/minute", "trusted_for": "off"})
        )
        await rl.settle(await rl.admit("10.0.0.3", "Y", checked=True), "SUCCESS")
        for i in range(2):
            await rl.settle(await rl.admit(f"10.9.4.{i}", "Y", checked=True), "KEY_MISMATCH")
        assert (await rl.admit("10.0.0.3", "Y", checked=True)).blocked is not None

    asyncio.run(scenario())
