"""Settings from flags and environment, and the server secret that keys digests.

The secret comes from ``MOECONNECT_SECRET`` or ``MOECONNECT_SECRET_FILE``; with SQLite and
neither set, it is created beside the database file (``<file>.secret``, mode 0600) so the CLI and
the server on the same database agree.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .dcs import DEFAULT_DCS, parse_dc_list
from .store.urls import DatabaseURL

__all__ = ["DEFAULT_DB", "ConfigError", "Settings", "load_secret"]

DEFAULT_DB = "sqlite:///./moeconnect.db"
_MIN_SECRET = 16


class ConfigError(Exception):
    """A setting is missing or wrong; the message says how to fix it."""


def load_secret(db_url: str, env: Mapping[str, str] | None = None) -> bytes:
    """The server secret for ``db_url``, creating ``<db file>.secret`` for SQLite if needed."""
    env = os.environ if env is None else env
    if value := env.get("MOECONNECT_SECRET"):
        if len(value) < _MIN_SECRET:
            raise ConfigError(f"MOECONNECT_SECRET must be at least {_MIN_SECRET} characters long")
        return value.encode()
    if path := env.get("MOECONNECT_SECRET_FILE"):
        try:
            data = Path(path).read_bytes().strip()
        except OSError as err:
            raise ConfigError(f"can't read MOECONNECT_SECRET_FILE {path}: {err.strerror}") from None
        if len(data) < _MIN_SECRET:
            raise ConfigError(f"the secret in {path} must be at least {_MIN_SECRET} bytes long")
        return data
    db = DatabaseURL.parse(db_url)
    if db.kind != "sqlite" or db.sqlite_path is None:
        raise ConfigError(
            "set MOECONNECT_SECRET or MOECONNECT_SECRET_FILE: with PostgreSQL every instance "
            "must share one configured server secret"
        )
    secret_path = db.sqlite_path.with_name(db.sqlite_path.name + ".secret")
    try:
        return _read_secret_file(secret_path)
    except FileNotFoundError:
        pass
    return _create_secret_file(secret_path)


def _read_secret_file(path: Path) -> bytes:
    data = path.read_bytes().strip()
    if len(data) < _MIN_SECRET:
        raise ConfigError(
            f"the secret in {path} is {len(data)} bytes long, not at least {_MIN_SECRET}: "
            "digests made with it would not match; restore the file, or remove it together "
            "with every key made with it"
        )
    return data


def _create_secret_file(path: Path) -> bytes:
    """Create ``path`` with a new secret, or return the one another process created first.

    The file appears whole or not at all: the secret is written to a private temporary file
    that is then hard-linked into place (which fails if the name exists). Creating the file
    and then writing it would let a worker starting beside another read it empty in between,
    and sign every digest with an empty secret.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48).encode()
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:  # mkstemp's mode is 0600
            handle.write(value)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:  # another process won the race; use its secret
            return _read_secret_file(path)
    finally:
        os.unlink(temporary)
    return value


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {raw!r}") from None


def _redis_url(raw: str | None) -> str | None:
    if not raw:
        return None
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"MOECONNECT_REDIS must be a redis://, rediss:// or unix:// URL, not {raw!r}"
        )
    return raw


@dataclass(frozen=True)
class Settings:
    """Everything a server process needs to know; built from flags or the environment."""

    db_url: str = DEFAULT_DB
    dcs: tuple[str, ...] = ("01",)
    known_dcs: tuple[str, ...] = DEFAULT_DCS
    domain: str = "moengage.com"
    cache_ttl: float = 30.0
    change_poll_interval: float = 0.25
    trusted_proxies: tuple[str, ...] = ()
    log_level: str = "info"
    record_retention: str = "30d"  # how long the connection record keeps attempts
    audit_retention: str = "365d"  # how long the audit log keeps entries
    # Shared by every instance: carries cache invalidations now, rate-limit counters later.
    redis_url: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        known = DEFAULT_DCS
        if raw_known := env.get("MOECONNECT_KNOWN_DCS"):
            known = tuple(p.strip() for p in raw_known.split(",") if p.strip())
        try:
            dcs = parse_dc_list(env.get("MOECONNECT_DC", "01"), known)
        except ValueError as err:
            raise ConfigError(f"MOECONNECT_DC: {err}") from None
        proxies = tuple(
            p.strip() for p in env.get("MOECONNECT_TRUSTED_PROXIES", "").split(",") if p.strip()
        )
        return cls(
            db_url=env.get("MOECONNECT_DB") or DEFAULT_DB,
            dcs=dcs,
            known_dcs=known,
            domain=env.get("MOECONNECT_DOMAIN") or "moengage.com",
            cache_ttl=_env_float(env, "MOECONNECT_CACHE_TTL", 30.0),
            change_poll_interval=_env_float(env, "MOECONNECT_CHANGE_POLL", 0.25),
            trusted_proxies=proxies,
            log_level=(env.get("MOECONNECT_LOG_LEVEL") or "info").lower(),
            record_retention=env.get("MOECONNECT_RECORD_RETENTION") or "30d",
            audit_retention=env.get("MOECONNECT_AUDIT_RETENTION") or "365d",
            redis_url=_redis_url(env.get("MOECONNECT_REDIS")),
        )
