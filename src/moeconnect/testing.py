"""Run a real moeconnect server in tests: the pytest plugin and the class behind it.

``MoeconnectServer`` starts ``python -m moeconnect serve`` on a free port with a throwaway SQLite
database, waits until it answers, and offers helpers that create workspaces, generate, rotate (with
a grace period) and revoke keys, and suspend workspaces in the same store, exactly as the CLI would.

Installed with moeconnect, this module is a pytest plugin (entry point ``pytest11``) with fixtures:

- ``moeconnect_server`` (session): one server for DC 01, shared by the whole run;
- ``moeconnect_workspace`` (function): a fresh workspace with a Data API key on that server;
- ``moeconnect_server_factory`` (session): ``factory(dc="02")`` starts (once) a server for other
  DCs or settings, stopped at the end of the run.

Servers started by the fixtures see every helper's change at once (no credential cache) and have
no abuse limits, so a test never depends on timing or on how many tests failed before it.

The plugin loads in every pytest run of anyone who installs moeconnect, so importing this module
is cheap: the store and everything behind it are imported only when a helper runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    import concurrent.futures

    from .accounts import Accounts
    from .records import Workspace

__all__ = [
    "ENDPOINT_PATH",
    "TEST_SETTINGS",
    "MoeconnectServer",
    "ServerFactory",
    "WorkspaceKey",
    "free_port",
    "moeconnect_server",
    "moeconnect_server_factory",
    "moeconnect_workspace",
]

ENDPOINT_PATH = "/v1/integrations/authentication"
# Settings for servers a test suite talks to: every change visible at once, no abuse limits.
TEST_SETTINGS: dict[str, str] = {
    "MOECONNECT_CACHE_TTL": "0",
    "MOECONNECT_LIMIT_FAILED_PER_IP": "off",
    "MOECONNECT_LIMIT_FAILED_PER_WORKSPACE": "off",
    "MOECONNECT_LIMIT_PER_WORKSPACE": "off",
}

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _grace(grace: timedelta | str | float | None) -> timedelta | None:
    """A grace period written as a timedelta, seconds, or a duration like ``"24h"``."""
    if grace is None or isinstance(grace, timedelta):
        return grace
    if isinstance(grace, str):
        from .durations import parse_duration

        return parse_duration(grace)
    return timedelta(seconds=grace)


@dataclass(frozen=True)
class WorkspaceKey:
    """A workspace and its Data API key on a test server; the key is left out of the repr."""

    workspace_id: str
    key: str = field(repr=False)
    name: str
    dc: str
    base_url: str

    @property
    def endpoint(self) -> str:
        """The full URL of the Test Connection API on the server that holds this workspace."""
        return self.base_url + ENDPOINT_PATH


class MoeconnectServer:
    """A moeconnect server in a subprocess, on a free port, with its own database.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``base_url`` is where it
    answers; ``db_url`` is its store, which the helper methods write to directly, exactly as the
    CLI would.
    """

    def __init__(
        self,
        *,
        db_url: str | None = None,
        dc: str = "01",
        host: str = "127.0.0.1",
        port: int | None = None,
        workers: int = 1,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        workdir: str | os.PathLike[str] | None = None,
        tls: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
    ) -> None:
        """``tls=(certfile, keyfile)`` serves HTTPS (``base_url`` is then ``https://``)."""
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="moeconnect-"))
        self.db_url = db_url or f"sqlite:///{self.workdir / 'moeconnect.db'}"
        self.dc = dc
        self.host = host
        self.port = port or free_port(host)
        self.workers = workers
        self.extra_env = dict(env or {})
        self.args = list(args)
        self.tls = (str(tls[0]), str(tls[1])) if tls else None
        self.log_path = self.workdir / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """The full URL of the Test Connection API: ``base_url`` + ``/v1/integrations/...``."""
        return self.base_url + ENDPOINT_PATH

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOECONNECT_")}
        env.update(self.extra_env)
        env["MOECONNECT_DB"] = self.db_url
        return env

    # -- lifecycle -----------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "moeconnect",
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--dc",
            self.dc,
            "--workers",
            str(self.workers),
            "--db",
            self.db_url,
            *(("--ssl-certfile", self.tls[0], "--ssl-keyfile", self.tls[1]) if self.tls else ()),
            *self.args,
        ]

    def start(self, timeout: float = 20.0) -> MoeconnectServer:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.workdir,
        )
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        import ssl
        import urllib.error
        import urllib.request

        # Readiness only: whether the certificate is trusted is for the tests to find out.
        context = ssl._create_unverified_context() if self.tls else None  # noqa: S323
        # Straight to the local server, whatever HTTP(S)_PROXY a developer's shell sets.
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"moeconnect server exited with {self.process.returncode}:\n{self.logs()}"
                )
            try:
                with opener.open(self.base_url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"moeconnect server not ready after {timeout}s:\n{self.logs()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Stop the server (SIGTERM: graceful); returns its exit status."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def close(self) -> None:
        self.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def logs(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> MoeconnectServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the store, as the CLI would change it ---------------------------------------------

    def run(self, action: Callable[[Accounts], Awaitable[T]]) -> T:
        """Run ``action(accounts)`` against this server's store (in a thread, so it works from
        async tests too)."""

        import asyncio
        import concurrent.futures

        from .accounts import Accounts
        from .config import load_secret
        from .store import open_store

        async def go() -> T:
            store = open_store(self.db_url)
            try:
                await store.migrate()
                secret = load_secret(self.db_url, self.env)
                return await action(Accounts(store, secret))
            finally:
                await store.close()

        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        return self._pool.submit(asyncio.run, go()).result()

    def create_workspace(
        self, name: str = "Test workspace", dc: str | None = None, workspace_id: str | None = None
    ) -> Workspace:
        return self.run(
            lambda a: a.create_workspace(name, dc or self.dc.split(",")[0], workspace_id)
        )

    def generate_key(
        self, workspace_id: str, scope: str = "data", grace: timedelta | str | float | None = None
    ) -> str:
        """Generate (or rotate) a key and return its plaintext.

        With ``grace`` (a timedelta, seconds, or ``"24h"``), a key it replaces keeps working
        until then; otherwise the previous key stops working at once.
        """
        period = _grace(grace)
        return self.run(lambda a: a.generate_key(workspace_id, scope, period)).key

    def rotate_key(
        self, workspace_id: str, grace: timedelta | str | float | None = None, scope: str = "data"
    ) -> str:
        """Replace the current key with a new one (returned); the old one works for ``grace``."""
        return self.generate_key(workspace_id, scope, grace)

    def import_key(self, workspace_id: str, key: str, scope: str = "data") -> None:
        self.run(lambda a: a.import_key(workspace_id, key, scope))

    def revoke_key(self, workspace_id: str, scope: str = "data") -> None:
        self.run(lambda a: a.revoke_key(workspace_id, scope))

    def suspend(self, workspace_id: str) -> None:
        self.run(lambda a: a.store.set_workspace_status(workspace_id, "suspended"))

    def resume(self, workspace_id: str) -> None:
        self.run(lambda a: a.store.set_workspace_status(workspace_id, "active"))

    def workspace_with_key(self, name: str = "Test workspace") -> tuple[str, str]:
        """A new workspace and its Data API key: ``(workspace_id, key)``."""
        ws = self.create_workspace(name)
        return ws.id, self.generate_key(ws.id)

    def new_workspace(
        self, name: str = "Test workspace", dc: str | None = None, key: str | None = None
    ) -> WorkspaceKey:
        """A new workspace with a Data API key (generated, or ``key`` imported as given)."""
        ws = self.create_workspace(name, dc)
        if key is None:
            key = self.generate_key(ws.id)
        else:
            self.import_key(ws.id, key)
        return WorkspaceKey(ws.id, key, ws.name, ws.dc, self.base_url)

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``moeconnect ARGS --db <this store>`` and capture its output."""
        return subprocess.run(
            [sys.executable, "-m", "moeconnect", *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.workdir,
            timeout=60,
            check=False,
        )


ServerFactory = Callable[..., MoeconnectServer]


@pytest.fixture(scope="session")
def moeconnect_server_factory() -> Iterator[ServerFactory]:
    """Start servers with other settings: ``factory(dc="02")``, ``factory(dc="01,02")``,
    ``factory(env={"MOECONNECT_LIMIT_FAILED_PER_IP": "3/minute"})``,
    ``factory(tls=("cert.pem", "key.pem"))`` (HTTPS).

    Each distinct set of arguments starts one server, reused for the rest of the session and
    stopped at its end. Fixture servers see helper changes at once and have no abuse limits
    unless ``env`` sets them.
    """
    servers: dict[tuple[Any, ...], MoeconnectServer] = {}

    def start(
        dc: str = "01",
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        tls: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
    ) -> MoeconnectServer:
        tls_files = (str(tls[0]), str(tls[1])) if tls else None
        wanted = (dc, tuple(sorted((env or {}).items())), tuple(args), tls_files)
        if wanted not in servers:
            server = MoeconnectServer(
                dc=dc, env={**TEST_SETTINGS, **(env or {})}, args=args, tls=tls_files
            )
            try:
                server.start()
            except BaseException:
                server.close()
                raise
            servers[wanted] = server
        return servers[wanted]

    try:
        yield start
    finally:
        for server in servers.values():
            server.close()


@pytest.fixture(scope="session")
def moeconnect_server(moeconnect_server_factory: ServerFactory) -> MoeconnectServer:
    """A real moeconnect server (DC 01) for the whole test session, with a throwaway database."""
    return moeconnect_server_factory()


@pytest.fixture
def moeconnect_workspace(
    moeconnect_server: MoeconnectServer, request: pytest.FixtureRequest
) -> WorkspaceKey:
    """A fresh workspace with a Data API key on ``moeconnect_server``, named after the test."""
    return moeconnect_server.new_workspace(name=request.node.name[:100])
