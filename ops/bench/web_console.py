"""The web console's part of ``make bench`` (w): over a namespace of 100,000 entries,

- the search across keys and values (``GET /v1/namespaces/{ns}/search``, the trigram
  index of the asynchronous view ``entry_search``, once it has applied the entries): a
  value held by one entry, a key fragment held by a handful, and a value one entry in
  eight holds (its first page: the common case of a broad search);
- the first page of the namespace's listing (the read behind the console's namespace page);
- the console's first paint in Debian's Chromium (Playwright), from navigation to the
  first page of entries (or the entry's document and history) on screen: the namespace
  page, a search, an entry page; median and worst of a few loads, each in a fresh tab.

The entries are written through the ledger's writer in this process (``GroupCommitWriter``),
folded by the server's search view, then ANALYZEd, before the timed reads (sequential,
one keep-alive connection, after a warm-up: ``history.measure_gets``).
"""

from __future__ import annotations

import http.client
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

import psycopg

from nexus_ssot.ledger.commands import Put
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.store import LedgerApplication, open_application
from nexus_ssot.ledger.writer import GroupCommitWriter

from .history import brief, cpu_shares, get_json, measure_gets, query, write_commands
from .measuring import HOST, CpuMeter, header_dict, say, verdict
from .seeding import SEED_BATCH

ENTRIES, ENTRIES_QUICK = 100_000, 10_000
READS = 200  # timed reads per search
PAINTS = 5  # timed page loads per view (after one untimed)
REGIONS = ("eu-west-1", "eu-west-2", "eu-central-1", "us-east-1", "us-east-2", "us-west-2",
           "ap-south-1", "ap-northeast-1")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SEARCH_TARGET_MS = 200.0
#: Seconds the server's search view may take to apply the entries written.
FOLD_TIMEOUT = 600.0
NEEDLE_AT = 4242  # the one entry holding the rare value (a quick run has it too)
PAINT_TARGET_MS = 1000.0


def _document(i: int, needle: str) -> dict[str, Any]:
    document: dict[str, Any] = {
        "service": f"svc-{i:06d}", "region": REGIONS[i % len(REGIONS)],
        "owner": f"team-{i % 50:02d}",
        "endpoint": f"https://svc-{i:06d}.internal:{8000 + i % 1000}",
        "replicas": 1 + i % 7, "tags": ["tier-" + "abc"[i % 3], "managed"]}
    if i == NEEDLE_AT:
        document["note"] = needle
    return document


def _key(i: int) -> str:
    return f"services/{REGIONS[i % len(REGIONS)]}/svc-{i:06d}"


def _wait_for_search(port: int, path: str, position: int, headers: str) -> None:
    """Until the server's search view has applied ``position`` (each request waits up to
    the server's view wait, and answers 503 while the view is behind)."""
    target = query(path, {"q": "abc", "limit": 1, "min_position": position})
    deadline = time.monotonic() + FOLD_TIMEOUT
    while True:
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        try:
            conn.request("GET", target, headers=header_dict(headers))
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status == 200:
            return
        if response.status != 503 or time.monotonic() > deadline:
            raise RuntimeError(f"the search view did not apply position {position}: "
                               f"HTTP {response.status} {body[:300]!r}")


def _paint(port: int, token: str, paths: dict[str, tuple[str, str, int]]) -> dict[str, Any]:
    """Each view's first paint: milliseconds from navigation until ``selector`` matches
    ``count`` elements, in a fresh browser context signed in with ``token``."""
    if not CHROMIUM.exists():
        return {"skipped": f"{CHROMIUM} is not installed (make chromium)"}
    from playwright.sync_api import sync_playwright

    results: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                    headless=True)
        try:
            for label, (path, selector, count) in paths.items():
                samples: list[float] = []
                for attempt in range(PAINTS + 1):
                    context = browser.new_context(viewport={"width": 1280, "height": 800})
                    # signed in as the console keeps it: the token in this tab's storage
                    context.add_init_script(
                        f"sessionStorage.setItem('ssot.console.token', {token!r})")
                    page = context.new_page()
                    started = time.perf_counter()
                    page.goto(f"http://{HOST}:{port}{path}")
                    page.locator(selector).nth(count - 1).wait_for(timeout=30_000)
                    elapsed = (time.perf_counter() - started) * 1000
                    context.close()
                    if attempt:  # the first load fills the browser's and server's caches
                        samples.append(elapsed)
                results[label] = {"median_ms": round(statistics.median(samples), 1),
                                  "max_ms": round(max(samples), 1), "loads": len(samples)}
        finally:
            browser.close()
    return results


def run_all(port: int, database_url: str, token: str, *, entries: int = ENTRIES,
            meter: CpuMeter | None = None,
            headers: str = "") -> dict[str, Any]:
    tag = secrets.token_hex(3)
    ns, needle = f"console{tag}", f"needle-{tag}"
    app: LedgerApplication = open_application(database_url, pool_size=2)
    writer = GroupCommitWriter(app, lambda _ns: Limits(), max_batch=SEED_BATCH)
    try:
        started = time.perf_counter()
        write_commands(writer, [Put(ns, _key(i), document=_document(i, needle))
                                for i in range(entries)], actor="bench")
        say(f"(w) wrote {entries:,} entries in {time.perf_counter() - started:.1f} s")
        report: dict[str, Any] = {"entries": entries}
    finally:
        app.close()
    path = f"/v1/namespaces/{ns}/search"
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT max(notification_id) FROM ssot_events").fetchone()
        started = time.perf_counter()
        _wait_for_search(port, path, int(row[0]) if row and row[0] else 0, headers)
        say(f"(w) the search view applied them {time.perf_counter() - started:.1f} s later")
        conn.execute("ANALYZE entries")
        conn.execute("ANALYZE view_entry_search")
    searches = {
        "one_value": ({"q": needle, "limit": 50}, 1),
        "key_fragment": ({"q": "svc-00424", "limit": 50}, 10),
        "common_value": ({"q": "eu-central-1", "limit": 50}, 50),
    }
    for label, (params, expected) in searches.items():
        target = query(path, params)
        found = get_json(port, target, headers)["items"]
        assert len(found) == expected, (label, len(found))
        report[label] = measure_gets(port, target, READS, meter, headers)
        say(f"(w) search {label} ({params['q']}): {brief(report[label])}")
    listing = query(f"/v1/namespaces/{ns}/entries", {"limit": 50})
    assert len(get_json(port, listing, headers)["items"]) == 50
    report["first_page"] = measure_gets(port, listing, READS, meter, headers)
    say(f"(w) first page of the namespace: {brief(report['first_page'])}")
    key = _key(NEEDLE_AT)
    report["paint"] = _paint(port, token, {
        "namespace": (f"/ui/namespaces/{ns}", "table.entries tbody tr", 50),
        "search": (f"/ui/namespaces/{ns}?q={needle}", "table.entries tbody tr[data-key]", 1),
        "entry": (f"/ui/namespaces/{ns}/entries/{key}", "ol.timeline li", 1),
    })
    say(f"(w) first paint: {report['paint']}")
    return report


def summarize(report: dict[str, Any], *, quick: bool = False) -> list[str]:
    def ok(flag: bool) -> str:
        return "PASS" if flag else "FAIL"

    entries = report["entries"]
    note = "" if entries >= ENTRIES else " (quick run)"
    lines = ["", f"The web console over a namespace of {entries:,} entries: API reads "
             "sequential on one keep-alive connection after a warm-up; first paint in "
             "Debian's Chromium from navigation to the data on screen:", "",
             "| step | p50 ms | p99 ms | CPU % server / PostgreSQL / other | target | status |",
             "|---|---:|---:|---:|---|---|"]
    for label, what in (("one_value", "a value one entry holds"),
                        ("key_fragment", "a key fragment ten entries hold"),
                        ("common_value", "a value one entry in eight holds, first page of 50")):
        q = report[label]
        shown = verdict(q["p99_ms"] < SEARCH_TARGET_MS, (q.get("cpu") or {}).get("other"))
        lines.append(f"| (w) search, {what} | {q['p50_ms']} | {q['p99_ms']} | {cpu_shares(q)} "
                     f"| p99 < {SEARCH_TARGET_MS:g} ms | {shown}{note} |")
    q = report["first_page"]
    lines.append(f"| (w) the namespace's first page of 50 | {q['p50_ms']} | {q['p99_ms']} "
                 f"| {cpu_shares(q)} | (for reference) "
                 f"| {verdict(None, (q.get('cpu') or {}).get('other'))} |")
    paint = report["paint"]
    if "skipped" in paint:
        lines.append(f"| (w) first paint | | | | < {PAINT_TARGET_MS:g} ms | not measured: "
                     f"{paint['skipped']} |")
    else:
        for label, what in (("namespace", "namespace page, 50 entries"),
                            ("search", "search results"), ("entry", "entry page")):
            p = paint[label]
            lines.append(f"| (w) first paint, {what} (median / worst of {p['loads']}) "
                         f"| {p['median_ms']} | {p['max_ms']} | | < {PAINT_TARGET_MS:g} ms "
                         f"| {ok(p['max_ms'] < PAINT_TARGET_MS)}{note} |")
    return lines
