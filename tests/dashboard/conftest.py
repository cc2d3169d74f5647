"""Dashboard fixtures: a real server with an operator token, and a signed-in httpx client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest

from moeconnect.testing import MoeconnectServer

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    """The CSRF token in the first form of a page."""
    match = _CSRF.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


@dataclass
class Dashboard:
    server: MoeconnectServer
    token: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.base_url, timeout=15)

    @contextmanager
    def signed_in(self) -> Iterator[httpx.Client]:
        with self.client() as client:
            page = client.get("/dashboard/sign-in")
            response = client.post(
                "/dashboard/sign-in", data={"csrf": csrf_of(page.text), "token": self.token}
            )
            assert response.status_code == 303, response.text
            yield client


def create_token(server: MoeconnectServer, name: str = "dashboard-test") -> str:
    """A new operator token in the server's store, as ``moeconnect token create`` makes it."""
    return server.run(lambda a: a.create_token(name)).token


@pytest.fixture(scope="module")
def dashboard_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoeconnectServer]:
    """One real server per test module: starting one costs seconds on a loaded machine."""
    with MoeconnectServer(workdir=tmp_path_factory.mktemp("dashboard")) as running:
        yield running


@pytest.fixture
def dashboard(dashboard_server: MoeconnectServer) -> Dashboard:
    return Dashboard(dashboard_server, create_token(dashboard_server))
