"""Database URLs as users write them (``sqlite:///./x.db``, ``postgresql://...``), and the
driver URLs SQLAlchemy needs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

__all__ = ["DatabaseURL"]


@dataclass(frozen=True, slots=True)
class DatabaseURL:
    kind: str  # "sqlite" | "postgresql"
    async_url: str
    sync_url: str
    display: str  # safe to print: no password
    sqlite_path: Path | None = None

    @classmethod
    def parse(cls, url: str) -> DatabaseURL:
        try:
            parsed = make_url(url)
        except Exception:
            raise ValueError(
                f"can't parse the database URL; use sqlite:///path/to/file.db or "
                f"postgresql://user@host/dbname (got {url.split('@')[-1]!r})"
            ) from None
        backend = parsed.get_backend_name()
        display = parsed.render_as_string(hide_password=True)
        if backend == "sqlite":
            database = parsed.database
            if not database or database == ":memory:":
                raise ValueError("an in-memory SQLite database can't be shared; give a file path")
            path = Path(database).expanduser().resolve()
            uri = f"file:{path}?mode=rw&uri=true"
            return cls(
                "sqlite",
                f"sqlite+aiosqlite:///{uri}",
                f"sqlite:///{path}",
                display,
                path,
            )
        if backend in ("postgresql", "postgres"):
            base = parsed.set(drivername="postgresql+asyncpg")
            sync = parsed.set(drivername="postgresql")
            return cls(
                "postgresql",
                base.render_as_string(hide_password=False),
                sync.render_as_string(hide_password=False),
                display,
            )
        raise ValueError(f"unsupported database {backend!r}; use sqlite:/// or postgresql://")

    def ensure_sqlite_file(self) -> None:
        """Create the SQLite file (and its folder) if missing; the engine itself never does.

        Created 0600, empty (an empty file is a valid SQLite database), before anything is
        written to it: it holds key digests and the connection record, which no other local
        user should read. SQLite creates the ``-wal`` and ``-shm`` files with the database
        file's own permissions, so they are 0600 too. An existing file keeps its mode.
        """
        assert self.sqlite_path is not None
        if not self.sqlite_path.exists():
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.sqlite_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process created it first
                return
            os.fchmod(fd, 0o600)  # exactly: a strict umask (0277) must not leave it unwritable
            os.close(fd)

    def sqlite_file_id(self) -> tuple[int, int] | None:
        """(device, inode) of the SQLite file, or ``None`` when it is gone."""
        assert self.sqlite_path is not None
        try:
            st = os.stat(self.sqlite_path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)
