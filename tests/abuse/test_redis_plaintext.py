"""No key plaintext in Redis: a key sent as the Basic username (a client swapped ``app_id`` and
``app_secret``), or in any other field, never becomes part of a key name or a value.

A throwaway ``redis-server`` of this test's own, so ``SCAN`` sees every key there is.
"""

from __future__ import annotations

import base64
from pathlib import Path

import redis

from moeconnect.testing import MoeconnectServer

from .. import services, throwaway
from .helpers import PATH, sync_client_from


def _everything(client: redis.Redis) -> list[bytes]:
    """Every key name in Redis, and every value in it, whatever its type."""
    found: list[bytes] = []
    for name in client.scan_iter(count=1000):
        found.append(name)
        kind = client.type(name)
        if kind == b"string":
            found.append(client.get(name) or b"")
        elif kind == b"zset":
            found.extend(member for member, _ in client.zrange(name, 0, -1, withscores=True))
        elif kind == b"hash":
            for field, value in client.hgetall(name).items():
                found += [field, value]
        elif kind == b"set":
            found.extend(client.smembers(name))
        elif kind == b"list":
            found.extend(client.lrange(name, 0, -1))
        else:
            raise AssertionError(f"a Redis value of type {kind!r} this test can't read")
    return found


def test_no_key_plaintext_in_any_redis_key_name_or_value(tmp_path: Path) -> None:
    services.need_tool(throwaway.redis_bin() is not None, "redis-server is not installed")
    with throwaway.ThrowawayRedis() as own_redis:
        args = ["--redis", own_redis.url, "--limit-failed-per-workspace", "5/minute"]
        with MoeconnectServer(workdir=tmp_path, args=args) as server:
            workspace_id, key = server.workspace_with_key()
            assert key.startswith("moe_data_")

            def send(username: str, password: str, **fields: str) -> int:
                token = base64.b64encode(f"{username}:{password}".encode()).decode()
                appkey = fields.pop("appkey", username)
                body = {"app_id": username, "app_secret": password, "region": "01"}
                body["source"] = "plaintext-test"
                body.update(fields)
                headers = {"Authorization": f"Basic {token}", "MOE-APPKEY": appkey}
                return client.post(PATH, json=body, headers=headers).status_code

            statuses: list[int] = []
            with sync_client_from("127.0.3.1", server.base_url) as client:
                statuses.append(send(workspace_id, key))  # a success: the trust is recorded
                for _ in range(8):  # swapped fields: the key is the username
                    statuses.append(send(key, workspace_id))
            with sync_client_from("127.0.3.2", server.base_url) as client:
                statuses.append(send(workspace_id, key + "x", source=key))
                statuses.append(send(workspace_id, "wrong", region=key))
                statuses.append(send(workspace_id, "wrong", appkey=key))
                statuses.append(send(key[:-1] + "!", workspace_id))  # not an ID, nor a key
            # The swapped requests tripped their shared bucket's limit: the key was counted.
            assert statuses[0] == 200 and 429 in statuses[1:9], statuses

            probe = redis.Redis.from_url(own_redis.url)
            try:
                everything = _everything(probe)
            finally:
                probe.close()
            names = [item.decode("latin-1") for item in everything]
            secret_part = key.removeprefix("moe_data_")
            leaked = [name for name in names if secret_part[:20] in name]
            assert leaked == [], leaked
            assert any("#invalid" in name for name in names), names
            assert any(workspace_id in name for name in names)  # real IDs still name counters
