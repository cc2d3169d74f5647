"""Over TLS the session cookie is also ``Secure``: a real server with a self-signed certificate."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from moeconnect.testing import MoeconnectServer

from .conftest import create_token, csrf_of


class TLSServer(MoeconnectServer):
    """The test server behind ``--ssl-certfile``; trusts exactly its own certificate."""

    def __init__(self, cert: Path, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.trust = ssl.create_default_context(cafile=str(cert))

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.logs()}")
            try:
                if httpx.get(self.base_url + "/healthz", verify=self.trust, timeout=1).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(self.logs())


def test_session_cookie_is_secure_over_tls(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a throwaway certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    args = ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    with TLSServer(cert, workdir=tmp_path, args=args) as server:
        token = create_token(server)
        with httpx.Client(base_url=server.base_url, verify=server.trust) as client:
            page = client.get("/dashboard/sign-in")
            signin_cookie = page.headers["set-cookie"].lower()
            assert "; secure" in signin_cookie
            response = client.post(
                "/dashboard/sign-in", data={"csrf": csrf_of(page.text), "token": token}
            )
            assert response.status_code == 303
            session = next(
                c
                for c in response.headers.get_list("set-cookie")
                if c.startswith("moeconnect_session=")
            )
            attributes = [part.strip().lower() for part in session.split(";")]
            assert {"secure", "httponly", "samesite=lax"} <= set(attributes)
            assert client.get("/dashboard").status_code == 200
