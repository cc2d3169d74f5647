"""The audit log's pure parts: the failed sign-in bound, what before/after may hold, the lines
the Audit page shows."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from moeconnect.audit import AuditContext, AuditEntry, SignInFailures, describe, dump
from moeconnect.keys import generate_key


def test_sign_in_failures_are_capped_per_ip_and_per_minute() -> None:
    limit = SignInFailures(per_ip=3, per_minute=5)
    minute = 1_000_000 * 60.0
    assert [limit.admit("a", minute + i) for i in range(5)] == [0, 0, 0, None, None]
    # Others still get entries until the minute's total is reached; the first entry after
    # failures went unrecorded says how many.
    assert limit.admit("b", minute + 5) == 2
    assert limit.admit("c", minute + 6) == 0
    assert limit.admit("d", minute + 7) is None  # 5 written this minute
    assert limit.admit("a", minute + 61) == 1  # a new minute: 1 went unrecorded since
    assert limit.unrecorded == 0


def test_memory_stays_bounded_under_many_addresses() -> None:
    limit = SignInFailures(per_ip=5, per_minute=20)
    written = sum(limit.admit(f"10.0.{n // 256}.{n % 256}", 60.0) is not None for n in range(5000))
    assert written == 20 and len(limit._by_ip) == 20 and limit.unrecorded == 4980


def test_dump_keeps_a_pasted_key_out_and_writes_utc_with_z() -> None:
    key = generate_key("data")
    text = dump({"name": f"shop {key}", "at": datetime(2026, 1, 5, 10, tzinfo=UTC)})
    assert text is not None and key not in text and key[9:17] not in text
    assert orjson.loads(text) == {"name": "shop moe_data_[redacted]", "at": "2026-01-05T10:00:00Z"}
    assert dump(None) is None


def test_contexts() -> None:
    assert AuditContext.cli().actor_name.startswith("cli:")  # type: ignore[union-attr]
    assert AuditContext.cli().channel == "cli" and AuditContext.cli().client_ip is None
    anonymous = AuditContext.anonymous("dashboard", "192.0.2.1")
    assert (anonymous.actor_kind, anonymous.actor_id, anonymous.actor_name) == (
        "unknown",
        None,
        None,
    )


def entry(
    action: str, before: object = None, after: object = None, target: str = "t"
) -> AuditEntry:
    return AuditEntry(
        1,
        datetime.now(UTC),
        "cli",
        None,
        "cli:alice",
        "cli",
        None,
        action,
        "ws",
        target,
        before,  # type: ignore[arg-type]
        after,  # type: ignore[arg-type]
    )


def test_describe() -> None:
    assert describe(entry("workspace.rename", {"name": "A"}, {"name": "B"})) == "Renamed “A” → “B”"
    rotate = entry(
        "key.rotate",
        {"key_id": "key_old", "hint": "abcd"},
        {"scope": "data", "hint": "wxyz", "previous_key_expires_at": "2026-01-05T10:00:00Z"},
        "key_new",
    )
    assert describe(rotate) == (
        "Rotated data key …wxyz (key_new); replaced …abcd (key_old), "
        "which works until 05 Jan 2026, 10:00 UTC"
    )
    assert describe(entry("key.revoke", {"keys": []}, {"revoked": 0}, "push")) == (
        "Revoked the push key: there was none"
    )
    assert entry("x").actor == "cli:alice"
