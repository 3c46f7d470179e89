"""The web console against a server with ``SSOT_AUTH=off`` (loopback only), end to end in
Debian's Chromium: it works as the API does then — no sign-in form, no token, every
caller acting as the anonymous administrator — so it opens straight on the namespaces,
browses to an entry and its history, reverts with a preview, and says auth is off where
a signed-in user's name and *Sign out* would be."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from .conftest import RunningServer, make_settings, own_database, serving
from .test_console import browser, put, watched_page  # noqa: F401 (the module's browser fixture)

#: The actor the server records for a caller who names none (``SSOT_DEFAULT_ACTOR``).
ACTOR = "platform-bot"


@pytest.fixture(scope="module")
def open_api(server_url: str) -> Iterator[RunningServer]:
    """The API with auth off, on a database of its own (so its namespaces are this
    module's alone), writes going to a writer process as ``ssot serve`` runs it."""
    with own_database(server_url, "ssot_open") as url, \
            serving(make_settings(url, auth="off", default_actor=ACTOR)) as running:
        yield running


@pytest.fixture()
def anyone(open_api: RunningServer) -> Iterator[httpx.Client]:
    """A client with no token at all."""
    with httpx.Client(base_url=open_api.url, timeout=30) as c:
        yield c


@pytest.fixture()
def page(browser: Browser, open_api: RunningServer) -> Iterator[Page]:  # noqa: F811
    # an answer the console shows (a view still catching up: 503) is logged by the
    # browser too; a refusal to an unsigned caller (401) is a fault with auth off
    with watched_page(browser, open_api.url,
                      lambda text: not text.startswith("Failed to load resource")
                      or "status of 401" in text) as page:
        yield page


def test_the_console_with_auth_off_needs_no_sign_in_and_writes(
        page: Page, anyone: httpx.Client, ns: str) -> None:
    me = anyone.get("/v1/access/whoami").json()
    assert (me["method"], me["actor"]) == ("anonymous", ACTOR)  # the actor writes record
    put(anyone, ns, "services/payments/db", {"host": "db-a.internal"}, reason="first")
    put(anyone, ns, "services/payments/db", {"host": "db-b.internal"}, reason="move to b")

    page.goto("/ui/")
    who = page.locator("#who")
    expect(who).to_contain_text("Auth off: no sign-in, every request may do everything")
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    expect(page.get_by_role("heading", name="Sign in")).to_have_count(0)
    expect(page.get_by_label("Bearer token")).to_have_count(0)

    page.get_by_role("link", name=ns, exact=True).click()
    expect(page).to_have_url(re.compile(rf"/ui/namespaces/{ns}$"))
    page.get_by_role("link", name="services/payments/db").click()
    timeline = page.locator("ol.timeline li")
    expect(timeline).to_have_count(2)
    expect(timeline.first).to_contain_text(f"v2 updated by {ACTOR}")
    expect(timeline.first).to_contain_text("“move to b”")
    expect(page.locator(".document pre")).to_contain_text("db-b.internal")

    page.get_by_label("To version").select_option("1")
    page.get_by_label("Reason").fill("back to a")
    page.get_by_role("button", name="Preview").click()
    preview = page.locator(".preview-box")
    expect(preview).to_contain_text("Reverting appends version 3 with the content of v1")
    page.get_by_role("button", name="Revert", exact=True).click()
    expect(preview).to_contain_text("Reverted: version 3 has the content of v1")
    expect(timeline).to_have_count(3)
    expect(timeline.first).to_contain_text(f"v3 restored by {ACTOR}")
    expect(timeline.first).to_contain_text("“back to a”")
    entry = anyone.get(f"/v1/namespaces/{ns}/entries/services/payments/db").json()
    assert entry["version"] == 3 and entry["document"] == {"host": "db-a.internal"}
    assert page.evaluate("sessionStorage.length + localStorage.length") == 0  # no token kept

    # a tab that kept a token from before the server ran with auth off: the API ignores
    # it, so the console says auth is off (no one signed in to sign out) and forgets it
    page.evaluate("sessionStorage.setItem('ssot.console.token', 'ssot_0000_from_before')")
    page.reload()
    expect(who).to_contain_text("Auth off: no sign-in, every request may do everything")
    expect(timeline).to_have_count(3)
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    assert page.evaluate("sessionStorage.length") == 0
