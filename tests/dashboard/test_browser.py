"""The whole key lifecycle in a real browser (Debian's Chromium, headless, via Playwright)
against a real server: sign in, create a workspace, generate and copy a Data key, connect with
it, rotate with a grace period, see the stale-key warning for the tool still on the old key,
revoke. Screenshots for docs/ are taken on the way."""

from __future__ import annotations

import base64
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from moeconnect.keys import generate_key
from moeconnect.testing import MoeconnectServer

from .. import services
from .conftest import create_token

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WARNING = (
    "After you generate a different Data API key and save it, the authentication will start failing"
)


def need_chromium() -> None:
    """Skip without Chromium, or fail when services (CI) are required."""
    services.need_tool(
        os.access(CHROMIUM, os.X_OK),
        f"Chromium is not installed at {CHROMIUM} "
        "(apt-get install chromium; `make test` does that when run as root)",
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


def connect(server: MoeconnectServer, workspace_id: str, key: str, source: str) -> httpx.Response:
    """One Test Connection call, as an integration partner's tool makes it."""
    basic = base64.b64encode(f"{workspace_id}:{key}".encode()).decode()
    return httpx.post(
        server.base_url + "/v1/integrations/authentication",
        headers={"Authorization": f"Basic {basic}", "MOE-APPKEY": workspace_id},
        json={"app_id": workspace_id, "app_secret": key, "source": source, "region": "01"},
        timeout=15,
    )


def reload_until(page: Page, locator: Locator, timeout: float = 20) -> None:
    """Reload until ``locator`` shows: the connection record is written in batches."""
    deadline = time.monotonic() + timeout
    while not locator.first.is_visible() and time.monotonic() < deadline:
        time.sleep(0.3)
        page.reload()


def test_missing_chromium_skips_or_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("MOECONNECT_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Chromium is not installed"):
        need_chromium()
    monkeypatch.setenv("MOECONNECT_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="MOECONNECT_REQUIRE_SERVICES=1"):
        need_chromium()


def test_key_lifecycle_in_the_browser(dashboard_server: MoeconnectServer, browser: object) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    server = dashboard_server
    token = create_token(server, "browser")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1200, "height": 860})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.base_url)
    page: Page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        # Sign in: any dashboard page sends us to the sign-in form first.
        page.goto(server.base_url + "/dashboard")
        expect(page).to_have_url(f"{server.base_url}/dashboard/sign-in?next=%2Fdashboard")
        expect(page.get_by_role("heading", name="Sign in to the dashboard")).to_be_visible()
        page.screenshot(path=SCREENSHOTS / "dashboard-sign-in.png")
        page.get_by_label("Operator token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Workspaces")).to_be_visible()
        assert token not in page.content()

        # Create a workspace.
        page.get_by_role("link", name="New workspace").click()
        page.get_by_label("Name").fill("Acme Shop")
        page.get_by_label("Data center").select_option("01")
        page.get_by_role("button", name="Create workspace").click()
        expect(page.get_by_role("heading", name="APIs")).to_be_visible()
        workspace_id = page.get_by_label("Workspace ID (App ID)", exact=True).input_value()
        assert server.run(lambda a: a.store.get_workspace(workspace_id)) is not None

        # Generate the Data key and copy it with the copy button.
        page.get_by_role("link", name="Generate key for Data").click()
        page.get_by_role("button", name="Generate key").click()
        expect(page.get_by_role("heading", name="Your new Data API key")).to_be_visible()
        shown = page.get_by_label("Data API key", exact=True).input_value()
        page.get_by_role("button", name="Copy Data API key").click()
        expect(page.get_by_role("button", name="Copy Data API key")).to_have_text("Copied")
        first_key = page.evaluate("navigator.clipboard.readText()")
        assert first_key == shown and first_key.startswith("moe_data_")

        # The key works against the API.
        ok = connect(server, workspace_id, first_key, "acme-cdp")
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"status": "success", "app_name": "Acme Shop"}

        # Shown once: back on the workspace page only its hint remains.
        page.get_by_role("link", name="I have saved the key").click()
        assert first_key not in page.content()
        expect(page.locator("#scope-data")).to_contain_text(first_key[-4:])

        # Rotate with a 24-hour grace period, after reading the documented warning.
        page.get_by_role("link", name="Generate key for Data").click()
        expect(page.locator("#generate-warning")).to_contain_text(WARNING)
        page.get_by_label("24 hours").check()
        page.screenshot(path=SCREENSHOTS / "dashboard-generate.png")
        page.get_by_role("button", name="Generate and replace").click()
        second_key = page.get_by_label("Data API key", exact=True).input_value()
        assert second_key.startswith("moe_data_") and second_key != first_key
        expect(page.get_by_text("The previous key keeps working until")).to_be_visible()

        # acme-cdp still uses the old key (allowed, flagged); a new tool uses the new one.
        stale = connect(server, workspace_id, first_key, "acme-cdp")
        assert stale.status_code == 200, stale.text
        assert "sunset" in stale.headers
        assert connect(server, workspace_id, second_key, "warehouse-sync").status_code == 200
        unknown = generate_key("data")  # well formed, but not this workspace's key
        assert connect(server, workspace_id, unknown, "legacy-etl").status_code == 401

        # The dashboard warns about acme-cdp and says when its grace ends.
        page.get_by_role("link", name="I have saved the key").click()
        warning = page.locator("section.stale")
        reload_until(page, warning)
        expect(warning).to_contain_text("acme-cdp")
        expect(warning).to_contain_text("stops working at")
        expect(warning).not_to_contain_text("warehouse-sync")
        expect(page.locator("#scope-data")).to_contain_text("keeps working until")
        page.screenshot(path=SCREENSHOTS / "dashboard-workspace.png", full_page=True)

        # The activity view: chart, per-source summary, recent attempts.
        page.get_by_role("link", name="Connection activity").click()
        expect(page.get_by_role("heading", name="Connection activity")).to_be_visible()
        expect(page.get_by_role("img", name="Attempts by outcome, last 24 hours")).to_be_visible()
        sources = page.get_by_role("table", name="What each source did")
        expect(sources.get_by_role("row").filter(has_text="acme-cdp")).to_contain_text(
            "Replaced key"
        )
        expect(sources.get_by_role("row").filter(has_text="warehouse-sync")).to_contain_text(
            "Current"
        )
        recent = page.get_by_role("table", name="The latest connection attempts, newest first")
        reload_until(page, recent.get_by_role("row").filter(has_text="legacy-etl"))
        expect(recent).to_contain_text("SUCCESS_STALE_KEY")
        expect(recent.get_by_role("row").filter(has_text="legacy-etl")).to_contain_text(
            "KEY_MISMATCH"
        )
        page.screenshot(path=SCREENSHOTS / "dashboard-activity.png", full_page=True)

        # At phone width the page still works: no horizontal scrolling.
        page.set_viewport_size({"width": 375, "height": 812})
        page.get_by_role("link", name="API keys").click()
        expect(page.get_by_role("link", name="Revoke the Data key")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        page.screenshot(path=SCREENSHOTS / "dashboard-phone.png", full_page=True)
        for path in (f"/dashboard/workspaces/{workspace_id}/activity", "/dashboard"):
            page.goto(server.base_url + path)
            assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
        page.goto(server.base_url + f"/dashboard/workspaces/{workspace_id}")
        page.set_viewport_size({"width": 1200, "height": 860})

        # Revoke: both keys stop working.
        page.get_by_role("link", name="Revoke the Data key").click()
        page.get_by_role("button", name="Revoke key").click()
        expect(
            page.get_by_role("status").filter(has_text="The Data key is revoked")
        ).to_be_visible()
        expect(page.locator("#scope-data")).to_contain_text("Revoked")
        for key in (second_key, first_key):
            refused = connect(server, workspace_id, key, "acme-cdp")
            assert refused.status_code == 401, refused.text

        # Sign out.
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_text("You are signed out.")).to_be_visible()
        page.goto(server.base_url + f"/dashboard/workspaces/{workspace_id}")
        expect(page.get_by_role("heading", name="Sign in to the dashboard")).to_be_visible()
    finally:
        context.close()


def test_every_page_works_without_javascript(
    dashboard_server: MoeconnectServer, browser: object
) -> None:
    """Only the copy buttons need JavaScript; without it they stay hidden and the rest works."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    server = dashboard_server
    context = browser.new_context(java_script_enabled=False, viewport={"width": 375, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        page.goto(server.base_url + "/dashboard/workspaces/new")
        page.get_by_label("Operator token").fill(create_token(server, "no-js"))
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="New workspace")).to_be_visible()
        page.get_by_label("Name").fill("No Script Ltd")
        page.get_by_role("button", name="Create workspace").click()
        expect(page.get_by_role("heading", name="APIs")).to_be_visible()
        expect(page.get_by_role("button", name="Copy Workspace ID (App ID)")).to_be_hidden()
        workspace_id = page.get_by_label("Workspace ID (App ID)", exact=True).input_value()

        page.get_by_role("link", name="Generate key for Push").click()
        page.get_by_role("button", name="Generate key").click()
        key = page.get_by_label("Push API key", exact=True).input_value()
        assert key.startswith("moe_push_")
        expect(page.get_by_role("button", name="Copy Push API key")).to_be_hidden()
        keys = server.run(lambda a: a.list_keys(workspace_id))
        assert [(k.scope, k.hint) for k in keys] == [("push", key[-4:])]

        page.goto(server.base_url + "/dashboard?q=No+Script")
        expect(page.get_by_role("link", name="No Script Ltd")).to_be_visible()
        page.goto(server.base_url + f"/dashboard/workspaces/{workspace_id}/activity")
        expect(page.get_by_text("No tool has connected to this workspace yet.")).to_be_visible()
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_text("You are signed out.")).to_be_visible()
    finally:
        context.close()


def test_a_read_token_sees_no_form_it_cannot_use(
    dashboard_server: MoeconnectServer, browser: object
) -> None:
    """Issue 23: a ``read`` token's dashboard offers no Create, Generate or Revoke; a form
    forged in its page (with its own valid CSRF token) is refused and changes nothing."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    server = dashboard_server
    workspace_id, key = server.workspace_with_key("Globex Analytics")
    assert connect(server, workspace_id, key, "segment").status_code == 200
    token = server.run(lambda a: a.create_token("auditor", role="read")).token
    keys_before = server.run(lambda a: a.list_keys(workspace_id))
    context = browser.new_context(viewport={"width": 1200, "height": 860})
    page: Page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        page.goto(server.base_url + "/dashboard")
        page.get_by_label("Operator token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Workspaces")).to_be_visible()
        expect(page.locator(".topbar")).to_contain_text("auditor · read")
        expect(page.get_by_role("link", name="New workspace")).to_have_count(0)

        page.get_by_role("link", name="Globex Analytics").click()
        expect(page.get_by_role("heading", name="APIs")).to_be_visible()
        expect(page.get_by_role("note")).to_contain_text("role read")
        expect(page.locator("#scope-data")).to_contain_text(key[-4:])
        expect(page.get_by_role("link", name="Generate key for Data")).to_have_count(0)
        expect(page.get_by_role("link", name="Revoke the Data key")).to_have_count(0)
        expect(page.locator("form")).to_have_count(1)  # only Sign out
        page.screenshot(path=SCREENSHOTS / "dashboard-read-only.png", full_page=True)

        page.get_by_role("link", name="Connection activity").click()
        expect(page.get_by_role("heading", name="Connection activity")).to_be_visible()
        expect(page.locator("form")).to_have_count(1)

        # Typed by hand, the form pages are refused; so is a POST forged in the page.
        page.goto(server.base_url + f"/dashboard/workspaces/{workspace_id}/keys/data/generate")
        expect(
            page.get_by_role("heading", name="Your operator token can't do this")
        ).to_be_visible()
        status = page.evaluate(
            """async (path) => {
                const body = new FormData();
                body.append("csrf", document.querySelector('input[name="csrf"]').value);
                body.append("grace", "none");
                const response = await fetch(path, {method: "POST", body});
                return response.status;
            }""",
            f"/dashboard/workspaces/{workspace_id}/keys/data/revoke",
        )
        assert status == 403
        assert server.run(lambda a: a.list_keys(workspace_id)) == keys_before
        assert connect(server, workspace_id, key, "segment").status_code == 200
    finally:
        context.close()


def test_audit_page_in_the_browser(dashboard_server: MoeconnectServer, browser: object) -> None:
    """Issue 23: the workspace's Audit page lists every change — from the dashboard, the CLI and
    the admin API — with who made it, through which channel and from where; never a key."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    server = dashboard_server
    token = create_token(server, "Dana (support)")
    context = browser.new_context(viewport={"width": 1200, "height": 860})
    page: Page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        page.goto(server.base_url + "/dashboard/workspaces/new")
        page.get_by_label("Operator token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_label("Name").fill("Audit Co")
        page.get_by_role("button", name="Create workspace").click()
        workspace_id = page.get_by_label("Workspace ID (App ID)", exact=True).input_value()
        page.get_by_role("link", name="Generate key for Data").click()
        page.get_by_role("button", name="Generate key").click()
        key = page.get_by_label("Data API key", exact=True).input_value()
        # Changes through the other channels: the CLI, and the admin API with a robot's token.
        renamed = server.cli("workspace", "rename", workspace_id, "Audit Co Ltd")
        assert renamed.returncode == 0, renamed.stderr
        robot = create_token(server, "deploy-bot")
        rotated = httpx.post(
            f"{server.base_url}/admin/v1/workspaces/{workspace_id}/keys",
            json={"grace": "24h"},
            headers={"Authorization": f"Bearer {robot}"},
            timeout=15,
        )
        assert rotated.status_code == 201, rotated.text

        page.goto(server.base_url + f"/dashboard/workspaces/{workspace_id}")
        page.get_by_role("link", name="Audit log").click()
        expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
        table = page.get_by_role("table", name="Changes to this workspace, newest first")
        rows = table.locator("tbody tr")
        expect(rows).to_have_count(4)
        expect(rows.nth(0)).to_contain_text("key.rotate")
        expect(rows.nth(0)).to_contain_text("deploy-bot")
        expect(rows.nth(0)).to_contain_text("admin-api")
        expect(rows.nth(1)).to_contain_text("workspace.rename")
        expect(rows.nth(1)).to_contain_text("cli:")
        expect(rows.nth(1)).to_contain_text("Renamed “Audit Co” → “Audit Co Ltd”")
        expect(rows.nth(2)).to_contain_text("key.generate")
        expect(rows.nth(3)).to_contain_text("workspace.create")
        for row in (2, 3):
            expect(rows.nth(row)).to_contain_text("Dana (support)")
            expect(rows.nth(row)).to_contain_text("dashboard")
            expect(rows.nth(row)).to_contain_text("127.0.0.1")
        html = page.content()
        assert key not in html and token not in html and robot not in html
        assert key[-4:] in html  # the hint, as everywhere else
        page.screenshot(path=SCREENSHOTS / "dashboard-audit.png", full_page=True)

        # At phone width the table still fits.
        page.set_viewport_size({"width": 375, "height": 812})
        page.reload()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
    finally:
        context.close()
