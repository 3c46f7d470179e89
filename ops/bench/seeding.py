"""A big log for the steps that read one ((i)-(k), (m)-(n), (o) of ``make bench``): seeded
through the ledger's own write path (``GroupCommitWriter`` in processes of their own, large
batches, the same ``ssot_append`` as the server's writer, so the inline views and their
indexes are real), then a quiet system before the timed part: the server's followers of the
log (its broadcaster, its asynchronous views) caught up, and the bulk load vacuumed and
analyzed (autovacuum would otherwise do it at a moment of its choosing, possibly under the
timed reads).
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from nexus_ssot.ledger.commands import Context, Put
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.store import open_application
from nexus_ssot.ledger.writer import GroupCommitWriter

from .measuring import say

SEED_BATCH = 2000  # commands per write_batch (one ssot_append each)
SEED_WRITERS = 2  # processes, one writer each, on disjoint keys
RARE_EVERY = 5000  # one seeded event in this many is by the rare actor
QUIET_TIMEOUT = 600.0  # seconds to wait for the broadcaster to catch up
CATCH_UP_TIMEOUT = 60.0  # seconds a step waits for the followers after a load
# A prime that divides no key count made of 2s and 5s (the seeding's keys are multiples of
# 4,000): n -> n * SCATTER mod keys is a permutation of the keys.
SCATTER = 48_271


@dataclass(frozen=True)
class SeedShape:
    """What a bulk seeding writes. With ``keys`` 0, event ``i`` creates key ``k/<i>`` (keys
    in log order). Otherwise entry ``n = i % keys`` is written again every ``keys`` events
    (its versions spread over the log), in namespace ``namespaces[n % len(namespaces)]``,
    under a key name scattered over the key space (``n * SCATTER mod keys``: a real log
    does not write its keys in their sort order). The document is ``{"i": i}``, or with
    ``wide`` a ~150-byte configuration document."""

    namespaces: tuple[str, ...]
    keys: int = 0
    wide: bool = False

    def command(self, i: int) -> Put:
        n = i % self.keys if self.keys else i
        name = n * SCATTER % self.keys if self.keys else n
        document: dict[str, Any] = {"i": i}
        if self.wide:
            document.update({"service": f"svc-{n % 97:02d}", "region": "eu-west-1",
                             "host": f"db-{n % 1000:03d}.internal", "port": 5432,
                             "pool": {"min": 2, "max": 32}, "flags": ["tls", "audit"]})
        return Put(self.namespaces[n % len(self.namespaces)], f"k/{name:08d}",
                   document=document)


def _seed_part(database_url: str, shape: SeedShape, count: int, part: int, parts: int,
               busy: Sequence[str], rare: str) -> int:
    """Part ``part`` of ``parts`` of the seeding (every ``parts``-th batch), by one writer
    of its own (in its own process); the number of events it appended."""
    app = open_application(database_url, pool_size=1)
    writer = GroupCommitWriter(app, lambda _ns: Limits(), max_batch=SEED_BATCH, cache_size=0)
    written = 0
    try:
        for start in range(part * SEED_BATCH, count, parts * SEED_BATCH):
            now = datetime.now(UTC)
            futures = writer.write_batch([
                (shape.command(i),
                 Context(event_id=uuid.uuid4(), timestamp=now,
                         actor=rare if i % RARE_EVERY == 0 else busy[i % len(busy)],
                         correlation_id=f"seed-{i // SEED_BATCH}"), None)
                for i in range(start, min(count, start + SEED_BATCH))])
            for future in futures:
                future.result()
            written += len(futures)
    finally:
        app.close()
    return written


def seed_log(database_url: str, shape: SeedShape, count: int, busy: Sequence[str],
             rare: str) -> float:
    """Append ``count`` events of ``shape``, by the ``busy`` actors in turn and one in
    ``RARE_EVERY`` by ``rare``, through ``SEED_WRITERS`` writers in processes of their own
    (the writer's Python side is most of the work: threads would share one core); return
    the seconds it took. The writers own disjoint keys (a key's versions stay in order)."""
    if shape.keys and (shape.keys % (SEED_BATCH * SEED_WRITERS) or shape.keys % SCATTER == 0):
        raise ValueError(f"keys must be a multiple of {SEED_BATCH * SEED_WRITERS:,}"
                         f" and not of {SCATTER:,}")
    started = time.perf_counter()
    # A pool that can be stopped: a bench interrupted while it seeds (Ctrl-C, SIGTERM)
    # stops its writers at once, where an executor's shutdown waited minutes for them to
    # finish their parts before the bench could clean up.
    pool = multiprocessing.get_context("spawn").Pool(SEED_WRITERS)
    try:
        written = sum(pool.starmap(_seed_part, [
            (database_url, shape, count, part, SEED_WRITERS, list(busy), rare)
            for part in range(SEED_WRITERS)]))
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    assert written == count, (written, count)
    return time.perf_counter() - started


def follower_positions(conn: psycopg.Connection[tuple[Any, ...]]) -> tuple[int, dict[str, int]]:
    """The log's head and the position of each process that follows it: the broadcaster
    (the furthest saved position: a finished catch-up bench broadcaster stays behind) and
    each asynchronous view."""
    row = conn.execute(
        "SELECT (SELECT coalesce(max(position), 0) FROM entry_history),"
        " (SELECT max(position) FROM broadcaster_positions),"
        " to_regclass('projection_tracking') IS NOT NULL").fetchone()
    assert row is not None
    positions = {} if row[1] is None else {"broadcaster": int(row[1])}
    if row[2]:
        for name, position in conn.execute(
                "SELECT application_name, notification_id FROM projection_tracking"):
            positions[f"view {name}"] = int(position)
    return int(row[0]), positions


def wait_for_followers(database_url: str, head: int) -> bool:
    """Poll until the broadcaster and every asynchronous view are at ``head`` or beyond;
    False after ``CATCH_UP_TIMEOUT``."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            _, positions = follower_positions(conn)
            if all(at >= head for at in positions.values()):
                return True
            time.sleep(0.05)
    return False


def quiesce(database_url: str) -> dict[str, Any]:
    """Wait until the broadcaster and the views have caught up with the log (or stopped
    moving), then VACUUM ANALYZE what the bulk load wrote; the seconds each took."""
    started = time.perf_counter()
    caught_up: dict[str, float] = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        last: dict[str, int] = {}
        moved = time.monotonic()
        while time.perf_counter() - started < QUIET_TIMEOUT:
            head, positions = follower_positions(conn)
            behind = {name: at for name, at in positions.items() if at < head}
            for name in positions.keys() - behind.keys() - caught_up.keys():
                caught_up[name] = round(time.perf_counter() - started, 1)
            if not behind:
                break
            if behind != last:
                last, moved = behind, time.monotonic()
            elif time.monotonic() - moved > 15:
                say(f"not waiting for {behind} (the head is {head:,}): they stopped moving")
                break
            time.sleep(0.5)
        wait_s = time.perf_counter() - started
        started = time.perf_counter()
        for table in ("entry_history", "entries", "ssot_events"):
            conn.execute(f"VACUUM (ANALYZE) {table}")
        vacuum_s = time.perf_counter() - started
    return {"followers_wait_s": round(wait_s, 1), "followers_caught_up_s": caught_up,
            "vacuum_analyze_s": round(vacuum_s, 1)}
