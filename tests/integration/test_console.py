"""The web console at /ui, end to end in Debian's Chromium (Playwright): sign in with a
token, browse to an entry, read its history, diff two versions, move the as-of picker,
revert with a preview, search a value, and see another client's change appear in the live
tail and on an open namespace or entry page. One browser for the module; the API is the
in-test server (writes through a writer process, as ``ssot serve`` runs it).

``pytest tests/integration/test_console.py --console-screenshots docs/console`` also saves
screenshots of the main views (``make screenshots``)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from nexus_ssot.api.console_pages import CONTENT_SECURITY_POLICY

from .conftest import ADMIN_TOKEN, RunningServer
from .test_search import search

#: Debian's browser (make chromium installs it; a missing one fails the test, never skips)
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: A change made elsewhere shows within this (the issue's bound for the live tail).
LIVE_MS = 1000

@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield browser
        browser.close()


@contextlib.contextmanager
def watched_page(browser: Browser, url: str, fault: Callable[[str], bool]) -> Iterator[Page]:
    """A page at 1280x800 in a fresh context on ``url``; at the end, no script error and no
    browser console error for which ``fault(text)`` holds (Content-Security-Policy
    violations among them)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=url)
    page = context.new_page()
    page.set_default_timeout(5000)
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and fault(message.text):
            problems.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    yield page
    context.close()
    assert problems == []


@pytest.fixture()
def page(browser: Browser, api: RunningServer) -> Iterator[Page]:
    # an API answer the console shows (a 401 before signing in, a view still building)
    # is logged by the browser too; anything else is a fault
    with watched_page(browser, api.url,
                      lambda text: not text.startswith("Failed to load resource")) as page:
        yield page


@pytest.fixture()
def shots(request: pytest.FixtureRequest) -> Path | None:
    folder = request.config.getoption("--console-screenshots")
    if folder is None:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder)


def shoot(page: Page, shots: Path | None, name: str) -> None:
    if shots is not None:
        page.screenshot(path=str(shots / f"{name}.png"))


def put(client: httpx.Client, ns: str, key: str, document: dict[str, object],
        reason: str | None = None) -> int:
    r = client.put(f"/v1/namespaces/{ns}/entries/{key}", json=document,
                   headers={"X-Reason": reason} if reason else {})
    assert r.status_code in (200, 201), r.text
    version: int = r.json()["version"]
    return version


def sign_in(page: Page, path: str) -> None:
    page.goto(path)
    page.get_by_label("Bearer token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_contain_text("Signed in as admin")


def open_namespace(page: Page, ns: str, last_change: dict[str, object] | None = None) -> None:
    """Find ``ns`` on the namespaces page as a reader does, asking for more namespaces
    while it is not listed (the suite's server holds every test's namespaces), and open it
    (after checking that its row shows ``last_change``, an event of the entry history)."""
    link = page.get_by_role("link", name=ns, exact=True)
    rows = page.locator("main table tbody tr")
    expect(rows.first).to_be_visible()
    for _ in range(100):
        if link.count():
            break
        shown = rows.count()
        page.get_by_role("button", name="More namespaces").click()
        expect(rows).not_to_have_count(shown)
    if last_change is not None:
        row = rows.filter(has=link)
        expect(row).to_contain_text(f"position {last_change['position']}")
        expect(row.locator("time")).to_have_attribute("datetime",
                                                      str(last_change["recorded_at"]))
    link.click()


def test_every_console_url_answers_the_page_with_a_strict_policy(
        api: RunningServer, ns: str) -> None:
    anonymous = httpx.Client(base_url=api.url)  # no token: the pages hold no data
    for path in ("/ui/", f"/ui/namespaces/{ns}", f"/ui/namespaces/{ns}/entries/a/b.c?version=2",
                 f"/ui/namespaces/{ns}/cut?as_of=2026-01-01T00:00:00Z",
                 "/ui/tail?namespace=x", "/ui/health", "/ui/audit"):
        r = anonymous.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
        assert "<script>" not in r.text and 'src="/ui/assets/app.js"' in r.text
    script = anonymous.get("/ui/assets/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["x-content-type-options"] == "nosniff"
    assert anonymous.get("/ui/assets/nothing.js").status_code == 404
    assert anonymous.post("/ui/").status_code == 405
    # the data stays behind the API's authorization
    assert anonymous.get(f"/v1/namespaces/{ns}/entries").status_code == 401
    anonymous.close()


def test_an_entry_browsed_diffed_travelled_and_reverted(
        page: Page, client: httpx.Client, ns: str, shots: Path | None) -> None:
    put(client, ns, "services/payments/db", {"host": "db-a.internal", "port": 5432},
        reason="first")
    put(client, ns, "services/payments/db", {"host": "db-b.internal", "port": 5432},
        reason="move to b")
    put(client, ns, "services/payments/db", {"host": "db-b.internal", "port": 6432,
                                             "tls": True}, reason="pooler")
    put(client, ns, "services/billing/api", {"url": "https://billing.example"})
    last = client.get(f"/v1/namespaces/{ns}/entries/services/billing/api/history").json()

    sign_in(page, "/ui/")
    open_namespace(page, ns, last_change=last["items"][-1])
    expect(page).to_have_url(re.compile(rf"/ui/namespaces/{ns}$"))
    expect(page.locator("table.entries")).to_contain_text("services/billing/api")
    shoot(page, shots, "namespace")
    page.get_by_role("link", name="services/payments/db").click()

    timeline = page.locator("ol.timeline li")
    expect(timeline).to_have_count(3)
    expect(timeline.first).to_contain_text("v3 updated by admin")
    expect(timeline.first).to_contain_text("“pooler”")
    expect(page.locator(".document pre")).to_contain_text('"tls": true')

    page.get_by_label("From").select_option("1")
    page.get_by_label("To", exact=True).select_option("3")
    page.get_by_role("button", name="Diff").click()
    diff = page.locator(".diff-box pre")
    expect(diff.locator(".d-del")).to_contain_text(['"host": "db-a.internal"', '"port": 5432'])
    expect(diff.locator(".d-add")).to_contain_text(['"host": "db-b.internal"', '"port": 6432',
                                                    '"tls": true'])

    picker = page.get_by_label("As of")
    picker.focus()
    page.keyboard.press("Home")  # the first version's time
    expect(page.locator(".document pre")).to_contain_text("db-a.internal")
    expect(page).to_have_url(re.compile(r"\?as_of="))
    page.keyboard.press("ArrowRight")
    expect(page.locator(".document pre")).to_contain_text("db-b.internal")
    expect(page.locator(".document pre")).not_to_contain_text("tls")
    page.keyboard.press("End")  # now
    expect(page.locator(".document pre")).to_contain_text('"tls": true')
    shoot(page, shots, "entry")

    page.get_by_label("To version").select_option("1")
    page.get_by_label("Reason").fill("back to a")
    page.get_by_role("button", name="Preview").click()
    preview = page.locator(".preview-box")
    expect(preview).to_contain_text("Reverting appends version 4 with the content of v1")
    expect(preview.locator(".d-add")).to_contain_text(['"host": "db-a.internal"'])
    shoot(page, shots, "revert-preview")
    page.get_by_role("button", name="Revert", exact=True).click()
    expect(preview).to_contain_text("Reverted: version 4 has the content of v1")
    expect(timeline).to_have_count(4)
    expect(timeline.first).to_contain_text("v4 restored by admin")
    expect(timeline.first).to_contain_text("“back to a”")
    history = client.get(f"/v1/namespaces/{ns}/entries/services/payments/db/history").json()
    assert history["items"][-1]["document"] == {"host": "db-a.internal", "port": 5432}

    # a version written by another client appears on the open page, without a reload
    put(client, ns, "services/payments/db", {"host": "db-c.internal", "port": 5432})
    expect(timeline).to_have_count(5)
    expect(page.locator(".document pre")).to_contain_text("db-c.internal")
    # the token never reached a URL or lasting storage
    assert ADMIN_TOKEN not in page.url
    assert page.evaluate("Object.keys(localStorage).length") == 0


def test_a_value_found_and_another_clients_change_seen_live(
        page: Page, client: httpx.Client, ns: str, shots: Path | None,
        search_view: Any) -> None:
    for i in range(30):
        put(client, ns, f"flags/f{i:02d}", {"owner": "team-a", "rollout": i})
    beta = client.put(f"/v1/namespaces/{ns}/entries/flags/beta",
                      json={"owner": "team-zebra-unique", "rollout": 50})
    assert beta.status_code == 201, beta.text
    # the search's view has applied the writes (the page searches the view as it is)
    found = search(client, ns, "zebra-uni", beta.json()["position"])
    assert [e["key"] for e in found.json()["items"]] == ["flags/beta"], found.text
    sign_in(page, f"/ui/namespaces/{ns}")
    page.get_by_label("Search").fill("zebra-uni")
    page.get_by_label("Search").press("Enter")
    expect(page).to_have_url(re.compile(r"\?q=zebra-uni"))
    rows = page.locator("table.entries tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("flags/beta")
    shoot(page, shots, "search")

    # an open namespace page shows a new entry as it is written, without a reload
    page.goto(f"/ui/namespaces/{ns}?prefix=flags/b")
    expect(rows).to_have_count(1)
    expect(page.locator(".live-state")).to_have_text("● live")
    put(client, ns, "flags/bravo", {"owner": "team-c"})
    expect(rows).to_have_count(2)
    expect(page.locator("tr.fresh")).to_contain_text("flags/bravo")

    page.goto(f"/ui/tail?namespace={ns}&prefix=flags/")
    expect(page.locator(".live-state")).to_have_text("● live")
    put(client, ns, "flags/f07", {"owner": "team-b", "rollout": 7}, reason="handover")
    put(client, ns, "other/x", {"filtered": "out"})
    item = page.locator("ol.tail li").first
    expect(item).to_contain_text("flags/f07", timeout=LIVE_MS)
    expect(item).to_contain_text("entry.updated")
    expect(item).to_contain_text("“handover”")
    expect(page.locator("ol.tail li")).to_have_count(1)
    shoot(page, shots, "tail")


def test_the_namespace_at_a_past_point_restored_after_a_dry_run(
        page: Page, client: httpx.Client, ns: str, shots: Path | None) -> None:
    put(client, ns, "a", {"v": 1})
    put(client, ns, "b", {"v": 1})
    position = client.get(f"/v1/namespaces/{ns}").json()["last_position"]
    put(client, ns, "a", {"v": 2})
    put(client, ns, "c", {"v": 1})
    sign_in(page, f"/ui/namespaces/{ns}/cut?position={position}")
    expect(page.locator("table.entries tbody tr")).to_have_count(2)
    page.get_by_label("Reason").fill("undo the release")
    page.get_by_role("button", name="Dry run").click()
    plan = page.locator(".plan")
    expect(plan).to_contain_text("The plan: 2 change(s)")
    expect(plan.locator("tbody tr")).to_have_count(2)
    assert client.get(f"/v1/namespaces/{ns}/entries/c").status_code == 200  # dry: unchanged
    shoot(page, shots, "restore")
    page.get_by_role("button", name="Apply restore").click()
    expect(plan).to_contain_text("Restored: 2 change(s) appended")
    assert client.get(f"/v1/namespaces/{ns}/entries/c").status_code == 404
    assert client.get(f"/v1/namespaces/{ns}/entries/a").json()["document"] == {"v": 1}


def test_health_and_audit_panels(page: Page, client: httpx.Client, ns: str,
                                 shots: Path | None) -> None:
    put(client, ns, "k", {"x": 1}, reason="audited")
    sign_in(page, "/ui/health")
    expect(page.locator("section", has=page.locator("#lag-h"))).to_contain_text(
        "Log head: position")
    expect(page.locator("section", has=page.locator("#status-h"))).to_contain_text("Overall")
    shoot(page, shots, "health")
    page.goto(f"/ui/audit?namespace={ns}")
    expect(page.locator("table.audit tbody")).to_contain_text("audited")
    shoot(page, shots, "audit")


def test_a_bad_token_is_refused_and_signing_out_forgets_it(page: Page) -> None:
    page.goto("/ui/")
    page.get_by_label("Bearer token").fill("ssot_0000000000000000_notavalidsecret")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("401")
    page.get_by_label("Bearer token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_contain_text("admin")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Bearer token")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
