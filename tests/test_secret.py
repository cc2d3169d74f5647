"""The SQLite server secret beside the database file: made once, whole, shared by every process.

Workers of one server start together on a fresh database and each loads the secret; if one read
the file between another's creating and writing it, it would sign digests with an empty secret
and refuse every key (this happened: a two-worker test saw 401 for a key made a moment before).
"""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path
from typing import Any

import pytest

from moeconnect.config import ConfigError, load_secret

WORKERS = 8
ROUNDS = 25


def _load(db_url: str, start: Any) -> bytes:
    start.wait()
    return load_secret(db_url, {})


def test_processes_starting_together_share_one_whole_secret(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    with context.Pool(WORKERS) as pool:
        manager = context.Manager()
        for round_ in range(ROUNDS):
            db_url = f"sqlite:///{tmp_path / f'round{round_}.db'}"
            start = manager.Barrier(WORKERS)
            secrets = pool.starmap(_load, [(db_url, start)] * WORKERS)
            assert len(set(secrets)) == 1, f"round {round_}: {len(set(secrets))} secrets"
            assert len(secrets[0]) >= 32
            assert (tmp_path / f"round{round_}.db.secret").read_bytes() == secrets[0]
        manager.shutdown()
    # No temporary file is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"round{n}.db.secret" for n in range(ROUNDS)
    )


def test_the_secret_file_is_private_and_read_back(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'm.db'}"
    first = load_secret(db_url, {})
    mode = (tmp_path / "m.db.secret").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert load_secret(db_url, {}) == first


@pytest.mark.parametrize("content", [b"", b"\n", b"short"])
def test_an_empty_or_short_secret_file_is_an_error_not_a_secret(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / "m.db.secret").write_bytes(content)
    with pytest.raises(ConfigError, match=r"m\.db\.secret"):
        load_secret(f"sqlite:///{tmp_path / 'm.db'}", {})
