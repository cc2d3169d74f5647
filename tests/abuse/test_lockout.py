"""Lockout: strangers who spend a workspace's failure budget never lock out its integrations.

Workspace IDs are public (SDK configs, every ``MOE-APPKEY`` header), so anyone can send wrong keys
for a workspace. Once its budget is spent, only clients that have not succeeded for it recently
are refused (SPEC sections 5 and 9; the design and its threat model: docs/limits.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from moeconnect.testing import MoeconnectServer

from .helpers import PATH, attempt, fresh_loopback, sync_client_from

ATTACK_IPS = [f"127.0.1.{i}" for i in range(1, 51)]
OWNER_IP = "127.0.2.1"
ATTACK_COUNT = 10_000
ATTACK_SECONDS = 60.0
CONCURRENCY = 50  # one connection per attacking address


def _attack(base_url: str, workspace_id: str, count: int, rate: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("flood.py")),
            base_url,
            ",".join(ATTACK_IPS),
            workspace_id,
            str(count),
            str(rate),
            str(CONCURRENCY),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_a_distributed_attack_never_locks_out_the_workspaces_integration(tmp_path: Path) -> None:
    """10,000 wrong keys in 60 s from 50 addresses; the owner's integration, one request a second
    from its own address, gets 200 every time; the attackers get 429 past the budget."""
    with MoeconnectServer(workdir=tmp_path) as server:  # the default limits
        workspace_id, key = server.workspace_with_key("Attacked")
        base = server.base_url
        ok = attempt(workspace_id, key)
        with sync_client_from(OWNER_IP, base) as owner:
            assert owner.post(PATH, **ok).status_code == 200  # the integration worked before

        attack = _attack(base, workspace_id, ATTACK_COUNT, ATTACK_COUNT / ATTACK_SECONDS)
        owner_statuses: list[int] = []
        stranger_with_key: list[int] = []
        deadline = time.monotonic() + 3 * ATTACK_SECONDS  # bounded even on a slow machine
        try:
            owner = sync_client_from(OWNER_IP, base)
            tick = time.monotonic()
            while attack.poll() is None and time.monotonic() < deadline:
                if len(owner_statuses) % 10 == 9:  # now and then a new connection
                    owner.close()
                    owner = sync_client_from(OWNER_IP, base)
                owner_statuses.append(owner.post(PATH, **ok).status_code)
                if len(owner_statuses) == 30:
                    # The budget is spent: the correct key from an address that never succeeded
                    # is refused like any stranger's (the design's stated boundary).
                    with sync_client_from(fresh_loopback(), base) as stranger:
                        stranger_with_key.append(stranger.post(PATH, **ok).status_code)
                tick += 1.0
                time.sleep(max(0.0, tick - time.monotonic()))
            owner.close()
            out, _ = attack.communicate(timeout=30)
        finally:
            if attack.poll() is None:
                attack.kill()
                attack.wait()
        assert attack.returncode == 0
        result = json.loads(out)
        metrics = httpx.get(base + "/metrics").text

    statuses = result["statuses"]
    refused, let_through = statuses.get("429", 0), statuses.get("401", 0)
    print(
        f"\nattack: {sum(statuses.values())} wrong keys from {len(ATTACK_IPS)} addresses in "
        f"{result['seconds']:.1f} s: {let_through} answered 401, {refused} refused 429; "
        f"owner: {len(owner_statuses)} requests, {owner_statuses.count(200)} answered 200"
    )
    assert set(owner_statuses) == {200}, owner_statuses
    assert len(owner_statuses) >= 0.9 * ATTACK_SECONDS
    # The attackers: the workspace's 100 failures per window (a window opens with the first and
    # lasts a minute; plus what was in flight), then 429s.
    assert set(statuses) <= {"401", "429"}, statuses
    assert sum(statuses.values()) == ATTACK_COUNT
    windows = int(result["seconds"] // 60) + 1
    assert 100 <= let_through <= 100 * windows + CONCURRENCY, statuses
    assert refused == ATTACK_COUNT - let_through
    assert result["retry_after_missing"] == 0
    assert stranger_with_key == [429]
    assert 'moeconnect_ratelimit_rejections_total{limit="failed_per_workspace"}' in metrics


def test_two_instances_share_the_trust_through_redis(tmp_path: Path, redis_url: str) -> None:
    """The owner's success on instance A keeps it served on instance B, which never saw it."""
    db_url = f"sqlite:///{tmp_path / 'shared.db'}"
    args = ["--redis", redis_url]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        MoeconnectServer(db_url=db_url, args=args, workdir=tmp_path / "a") as a,
        MoeconnectServer(db_url=db_url, args=args, workdir=tmp_path / "b") as b,
    ):
        workspace_id, key = a.workspace_with_key("Shared")
        ok = attempt(workspace_id, key)
        owner_ip = fresh_loopback()
        with sync_client_from(owner_ip, a.base_url) as owner:
            assert owner.post(PATH, **ok).status_code == 200
        # 300 wrong keys from 50 addresses, split between the instances: the budget (100) is
        # spent on both (counted together in Redis), past it the attackers get 429.
        attack = _attack(b.base_url, workspace_id, 150, 500.0)
        attack_a = _attack(a.base_url, workspace_id, 150, 500.0)
        outs = [json.loads(p.communicate(timeout=60)[0]) for p in (attack, attack_a)]
        assert [p.returncode for p in (attack, attack_a)] == [0, 0]
        refused = sum(out["statuses"].get("429", 0) for out in outs)
        assert refused >= 300 - 100 - 2 * CONCURRENCY, outs
        with sync_client_from(fresh_loopback(), b.base_url) as stranger:
            answer = stranger.post(PATH, **ok)
            assert answer.status_code == 429, answer.text
        for instance in (b, a, b):
            with sync_client_from(owner_ip, instance.base_url) as owner:
                answer = owner.post(PATH, **ok)
                assert answer.status_code == 200, answer.text
