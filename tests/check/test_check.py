"""``moeconnect check`` against real servers: every exit code, every step that can fail.

Targets are a real moeconnect server, a real server whose store has broken, a port nobody listens
on, an unresolvable ``.invalid`` host, a plain-HTTP port called with https, and a tiny real HTTP
server that answers like a proxy (HTML 502) or a rate limiter (429 + Retry-After).
"""

from __future__ import annotations

import json
import os
import re
import select
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from moeconnect.cli import cli
from moeconnect.client import Client
from moeconnect.testing import (
    TEST_SETTINGS,
    MoeconnectServer,
    ServerFactory,
    WorkspaceKey,
    free_port,
)

from ..client.stub import PROXY_PAGE, json_answer, stub_server
from ..client.test_redaction import forms_of
from .tls import make_certificates

STEP = re.compile(r"^([✓✗]) (\w+)\s", re.MULTILINE)


def check(key: str, *args: str, workspace_id: str = "WS1") -> Result:
    runner = CliRunner()
    return runner.invoke(
        cli,
        ["check", "--workspace-id", workspace_id, "--timeout", "5", *args],
        env={"MOE_DATA_API_KEY": key},
        catch_exceptions=False,
    )


def steps(result: Result) -> list[tuple[str, str]]:
    return [(name, mark) for mark, name in STEP.findall(result.output)]


def fix_of(result: Result) -> str:
    return result.output.split("Fix: ", 1)[1].strip()


def check_json(key: str, *args: str, workspace_id: str = "WS1") -> tuple[int, dict[str, Any]]:
    result = check(key, *args, "--json", workspace_id=workspace_id)
    return result.exit_code, json.loads(result.output)


# -- 0 ----------------------------------------------------------------------------------------


def test_exit_0_walks_every_step(moeconnect_workspace: WorkspaceKey) -> None:
    ws = moeconnect_workspace
    result = check(ws.key, "--base-url", ws.base_url, workspace_id=ws.workspace_id)
    assert result.exit_code == 0, result.output
    assert steps(result) == [
        ("key", "✓"),
        ("url", "✓"),
        ("dns", "✓"),
        ("tcp", "✓"),
        ("tls", "✓"),
        ("http", "✓"),
        ("answer", "✓"),
    ]
    assert f"connected to workspace {ws.name!r}" in result.output
    assert "Connection works." in result.output


def test_exit_0_with_a_replaced_key_in_grace_warns_when_it_stops(
    moeconnect_server: MoeconnectServer, moeconnect_workspace: WorkspaceKey
) -> None:
    ws = moeconnect_workspace
    moeconnect_server.rotate_key(ws.workspace_id, grace="24h")
    code, doc = check_json(ws.key, "--base-url", ws.base_url, workspace_id=ws.workspace_id)
    assert code == 0 and doc["ok"] is True
    assert "replaced key that stops working at" in doc["fix"]
    assert doc["result"]["sunset"]


def test_json_is_one_document_with_steps_and_verdict(moeconnect_workspace: WorkspaceKey) -> None:
    ws = moeconnect_workspace
    code, doc = check_json(ws.key, "--base-url", ws.base_url, workspace_id=ws.workspace_id)
    assert code == 0
    assert doc["verdict"] == "connected" and doc["exit_code"] == 0 and doc["fix"] is None
    assert [s["step"] for s in doc["steps"]] == [
        "key",
        "url",
        "dns",
        "tcp",
        "tls",
        "http",
        "answer",
    ]
    assert all(s["ok"] for s in doc["steps"])
    assert doc["result"]["app_name"] == ws.name and doc["result"]["status"] == 200
    assert doc["endpoint"] == ws.endpoint


# -- 2: credentials -----------------------------------------------------------------------------


def test_exit_2_wrong_key(moeconnect_workspace: WorkspaceKey) -> None:
    ws = moeconnect_workspace
    result = check("an-imported-key", "--base-url", ws.base_url, workspace_id=ws.workspace_id)
    assert result.exit_code == 2
    assert steps(result)[-1] == ("answer", "✗")
    assert "KEY_MISMATCH" in result.output
    assert "copy the current key" in fix_of(result)


def test_exit_2_mistyped_key_is_caught_by_its_checksum_before_the_network(
    moeconnect_workspace: WorkspaceKey,
) -> None:
    ws = moeconnect_workspace
    typo = ws.key[:12] + ("Z" if ws.key[12] != "Z" else "Y") + ws.key[13:]
    # Nothing listens on this port: exit 2, not 4, proves no connection was tried.
    result = check(typo, "--base-url", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 2
    assert steps(result) == [("key", "✗")]
    assert "mistyped" in fix_of(result)


def test_exit_2_replaced_key_says_since_when(
    moeconnect_server: MoeconnectServer, moeconnect_workspace: WorkspaceKey
) -> None:
    ws = moeconnect_workspace
    moeconnect_server.rotate_key(ws.workspace_id)
    result = check(ws.key, "--base-url", ws.base_url, workspace_id=ws.workspace_id)
    assert result.exit_code == 2
    fix = fix_of(result)
    assert re.search(r"This key was replaced on \d{4}-\d\d-\d\d \d\d:\d\d UTC", fix), fix


def test_exit_2_suspended_workspace(
    moeconnect_server: MoeconnectServer, moeconnect_workspace: WorkspaceKey
) -> None:
    ws = moeconnect_workspace
    moeconnect_server.suspend(ws.workspace_id)
    result = check(ws.key, "--base-url", ws.base_url, workspace_id=ws.workspace_id)
    assert result.exit_code == 2
    assert "suspended" in fix_of(result) and "reactivate" in fix_of(result)


def test_exit_2_unknown_workspace(moeconnect_server: MoeconnectServer) -> None:
    result = check("an-imported-key", "--base-url", moeconnect_server.base_url, workspace_id="NOPE")
    assert result.exit_code == 2
    assert "copy the workspace ID again" in fix_of(result)


# -- 3: wrong DC or endpoint ----------------------------------------------------------------------


def test_exit_3_wrong_dc(moeconnect_workspace: WorkspaceKey) -> None:
    ws = moeconnect_workspace
    result = check(ws.key, "--dc", "02", "--base-url", ws.base_url, workspace_id=ws.workspace_id)
    assert result.exit_code == 3
    assert "Wrong data center" in fix_of(result)
    assert "https://api-02.moengage.com" in fix_of(result)


def test_exit_3_dns_failure() -> None:
    result = check("an-imported-key", "--base-url", "https://no-such-host.invalid")
    assert result.exit_code == 3, result.output
    assert steps(result)[-1] == ("dns", "✗")
    assert "no-such-host.invalid does not exist" in fix_of(result)


def test_exit_3_unknown_dc() -> None:
    result = check("an-imported-key", "--dc", "99")
    assert result.exit_code == 3
    assert steps(result)[-1] == ("url", "✗")


def test_exit_3_a_url_that_is_not_the_api(moeconnect_server: MoeconnectServer) -> None:
    result = check("an-imported-key", "--base-url", moeconnect_server.base_url + "/api")
    assert result.exit_code == 3
    assert "NOT_FOUND" in result.output and "check --base-url" in fix_of(result)


# -- 4: network ------------------------------------------------------------------------------------


def test_exit_4_refused_tcp_port() -> None:
    port = free_port()
    result = check("an-imported-key", "--base-url", f"http://127.0.0.1:{port}")
    assert result.exit_code == 4
    assert steps(result)[-1] == ("tcp", "✗")
    assert f"Nothing accepts connections on 127.0.0.1 port {port}" in fix_of(result)


def test_exit_4_tls_handshake_failure(moeconnect_server: MoeconnectServer) -> None:
    base = f"https://127.0.0.1:{moeconnect_server.port}"  # a plain-HTTP port
    result = check("an-imported-key", "--base-url", base)
    assert result.exit_code == 4, result.output
    assert steps(result)[-2:] == [("tcp", "✓"), ("tls", "✗")]
    assert "TLS handshake" in fix_of(result) and "try http://" in fix_of(result)


def test_exit_4_html_from_a_proxy() -> None:
    with stub_server([PROXY_PAGE]) as stub:
        code, doc = check_json("an-imported-key", "--base-url", stub.base_url)
    assert code == 4
    assert doc["verdict"] == "network"
    assert doc["result"]["code"] == "NON_JSON_RESPONSE" and doc["result"]["status"] == 502
    assert "proxy" in doc["fix"] and "text/html" in doc["fix"]
    assert [s["ok"] for s in doc["steps"]][-2:] == [True, False]


# -- 5: server error or rate limit ---------------------------------------------------------------


def test_exit_5_rate_limited_says_for_how_long() -> None:
    limited = json_answer(
        429,
        '{"status": "fail", "error": {"message": "Too many attempts (30 per 1 minute); wait 42 '
        'seconds before trying again.", "type": "Rate Limit Exceeded", "code": "RATE_LIMITED", '
        '"request_id": "stub-429-request"}}',
        ("Retry-After", "42"),
    )
    with stub_server([limited]) as stub:
        result = check("an-imported-key", "--base-url", stub.base_url)
        assert len(stub.arrivals) == 1  # the doctor reports a rate limit, it doesn't wait it out
    assert result.exit_code == 5
    assert "Rate limited: wait 42 seconds" in fix_of(result)


def test_exit_5_rate_limited_by_a_real_server(moeconnect_server_factory: ServerFactory) -> None:
    server = moeconnect_server_factory(env={"MOECONNECT_LIMIT_FAILED_PER_IP": "2/minute"})
    ws = server.new_workspace("Limited")
    for _ in range(2):  # two failures use up the limit
        assert check("a-wrong-key-1", "--base-url", server.base_url).exit_code == 2
    code, doc = check_json(ws.key, "--base-url", server.base_url, workspace_id=ws.workspace_id)
    assert code == 5, doc
    assert doc["result"]["code"] == "RATE_LIMITED" and doc["result"]["status"] == 429
    seconds = doc["result"]["retry_after"]
    assert 0 < seconds <= 60
    assert f"Rate limited: wait {seconds:g} seconds" in doc["fix"]


def test_exit_5_store_unavailable_on_a_real_server(tmp_path: Path) -> None:
    with MoeconnectServer(workdir=tmp_path, env=TEST_SETTINGS) as server:
        ws = server.new_workspace("Broken store")
        for path in tmp_path.glob("moeconnect.db*"):
            if not path.name.endswith(".secret"):
                path.write_bytes(b"not a database" * 512)
        code, doc = check_json(ws.key, "--base-url", server.base_url, workspace_id=ws.workspace_id)
    assert code == 5, doc
    assert doc["result"]["code"] == "STORE_UNAVAILABLE" and doc["result"]["status"] == 503
    assert "they may well be right" in doc["fix"]
    assert doc["result"]["retry_after"] is not None


# -- how the key gets in --------------------------------------------------------------------------


def test_the_key_is_never_an_argument() -> None:
    result = CliRunner().invoke(cli, ["check", "--workspace-id", "WS1", "--key", "x"])
    assert result.exit_code == 1 and "No such option" in result.output  # 2 means credentials


def test_the_key_from_stdin_as_a_real_subprocess(
    moeconnect_server: MoeconnectServer, moeconnect_workspace: WorkspaceKey
) -> None:
    ws = moeconnect_workspace
    run = moeconnect_server.cli(
        "check", "--workspace-id", ws.workspace_id, "--base-url", ws.base_url, input=ws.key + "\n"
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "✓ answer" in run.stdout
    for form in forms_of(ws.workspace_id, ws.key):
        assert form not in run.stdout + run.stderr


@pytest.mark.parametrize("answer", ["", "   "])
def test_an_empty_key_is_refused(answer: str) -> None:
    result = CliRunner().invoke(
        cli, ["check", "--workspace-id", "WS1"], env={"MOE_DATA_API_KEY": None}, input=answer + "\n"
    )
    assert result.exit_code == 2


def test_exit_4_through_a_corporate_proxy_that_answers_html(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With HTTP_PROXY set, the walk goes to the proxy (as httpx's request does), not the host."""
    with stub_server([PROXY_PAGE]) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url)
        code, doc = check_json("an-imported-key", "--base-url", "http://api-01.moeconnect.invalid")
        headers, _ = proxy.requests[0]
    assert code == 4, doc
    url, dns = doc["steps"][1], doc["steps"][2]
    assert url["detail"].endswith(f"via proxy 127.0.0.1:{proxy.base_url.rsplit(':', 1)[1]}")
    assert dns["ok"] and dns["detail"].startswith("127.0.0.1")
    assert headers["Host"] == "api-01.moeconnect.invalid"
    assert "proxy" in doc["fix"]


# -- TLS that works, and TLS that isn't trusted -------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, moeconnect_server_factory: ServerFactory
) -> tuple[MoeconnectServer, Path]:
    """A real moeconnect server on HTTPS, with a certificate from a throwaway CA."""
    ca, cert, key = make_certificates(tmp_path_factory.mktemp("tls"))
    return moeconnect_server_factory(tls=(cert, key)), ca


def test_exit_0_over_https_checks_the_certificate(
    tls_server: tuple[MoeconnectServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca = tls_server
    assert server.base_url.startswith("https://127.0.0.1:")
    ws = server.new_workspace("Over TLS")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # what a partner behind a private CA does
    result = check(ws.key, "--base-url", server.base_url, workspace_id=ws.workspace_id)
    assert result.exit_code == 0, result.output
    assert re.search(r"^✓ tls\s+TLSv1\.[23], certificate valid until ", result.output, re.M)
    with Client(verify=ssl.create_default_context(cafile=str(ca))) as client:
        assert client.test_connection(ws.workspace_id, ws.key, base_url=server.base_url).ok


def test_exit_4_untrusted_certificate(tls_server: tuple[MoeconnectServer, Path]) -> None:
    server, _ = tls_server
    result = check("an-imported-key", "--base-url", server.base_url)
    assert result.exit_code == 4, result.output
    assert steps(result)[-1] == ("tls", "✗")
    assert "certificate not trusted" in result.output
    assert "is not trusted" in fix_of(result) and "SSL_CERT_FILE" in fix_of(result)
    with Client() as client:
        assert client.test_connection("WS1", "k" * 10, base_url=server.base_url).code == "TLS_ERROR"


def test_a_too_long_source_is_refused_before_anything_is_sent() -> None:
    result = check("an-imported-key", "--source", "s" * 65)
    assert result.exit_code == 1 and "1 to 64 characters" in result.output


def test_the_key_from_a_hidden_prompt_on_a_terminal(
    moeconnect_server: MoeconnectServer, moeconnect_workspace: WorkspaceKey
) -> None:
    """On a terminal (a real pseudo-terminal here) the key is prompted for and not echoed."""
    ws = moeconnect_workspace
    master, slave = os.openpty()

    # The child makes the pseudo-terminal its controlling terminal, then becomes moeconnect.
    become = (
        "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
        "os.execv(sys.executable, [sys.executable, '-m', 'moeconnect', *sys.argv[1:]])"
    )
    args = ["check", "--workspace-id", ws.workspace_id, "--base-url", ws.base_url]
    process = subprocess.Popen(
        [sys.executable, "-c", become, *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        env={k: v for k, v in moeconnect_server.env.items() if not k.startswith("MOE_")},
    )
    os.close(slave)
    output, typed = b"", False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if not typed and b"key:" in output.lower():
                os.write(master, ws.key.encode() + b"\n")
                typed = True
            if not ready and process.poll() is not None:
                break
        assert process.wait(10) == 0, output
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    text = output.decode("utf-8", "replace")
    assert typed and "Data api key:" in text
    assert "answer" in text and "Connection works." in text
    assert ws.key not in text  # not echoed


def test_exit_4_when_the_configured_proxy_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    result = check("an-imported-key", "--base-url", "https://api-01.moeconnect.invalid")
    assert result.exit_code == 4, result.output
    assert steps(result)[-1] == ("tcp", "✗")
    assert f"The proxy 127.0.0.1 port {port} can't be reached" in fix_of(result)


def test_the_default_endpoint_is_moengages_for_the_dc() -> None:
    typo = "moe_data_" + "x" * 38  # caught by its checksum, so nothing leaves the machine
    code, doc = check_json(typo, "--dc", "2")
    assert code == 2
    assert doc["endpoint"] == "https://api-02.moengage.com/v1/integrations/authentication"
