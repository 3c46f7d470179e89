"""One ``ssot chaos`` run: the servers started (``servers``), concurrent clients and
subscribers (``clients``, ``subscribers``) while the nemesis injects faults on its seeded
schedule (``nemesis``), then everything healed and caught up, the log and the server-side
checks saved to the run folder, and the checker's report (``checker``).

The run folder: ``config.json`` (seed, schedule, names), ``identities.json`` (the policy
and the clients' identities, never a token: ``identities``), ``history.jsonl``,
``subscribers/*.jsonl``, ``log.jsonl`` (the log as committed), ``access_log.jsonl`` (the
access log), ``server.json`` (``ssot check``, ``ssot verify`` and ``ssot reconcile`` at
the end), ``report.json`` and the processes' logs.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from .nemesis import Fault, schedule
from .servers import Cluster

if TYPE_CHECKING:
    from .cluster_targets import ClusterTargets

    Servers = Cluster | ClusterTargets

EXIT_ANOMALY, EXIT_HARNESS = 1, 2
log = logging.getLogger("nexus_ssot.chaos")


async def _configure_namespaces(api_url: str, token: str) -> None:
    import httpx

    from .clients import STRICT_NS
    from .evidence import CHAOS_SCHEMA

    async with httpx.AsyncClient(base_url=api_url, timeout=10,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        response = await http.put(f"/v1/namespaces/{STRICT_NS}",
                                  json={"conflict_policy": "strict"},
                                  headers={"Idempotency-Key": "chaos-setup"})
        response.raise_for_status()
        # a schema that about one write in ten violates (its "r" is drawn below 1,000,000)
        response = await http.put(f"/v1/namespaces/{STRICT_NS}/schema", json=CHAOS_SCHEMA,
                                  headers={"Idempotency-Key": "chaos-setup-schema"})
        response.raise_for_status()


async def _exercise(cluster: Servers, folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Clients, subscribers and the nemesis for the run's duration; then heal, and wait
    until the broadcaster and every subscriber reached the log's head."""
    from .clients import Client, History, keys_of
    from .identities import ROLES, assign, locked_keys, make_identities
    from .subscribers import subscribers

    await _configure_namespaces(cluster.api_url, cluster.admin_token)
    assignment = assign(config["seed"], config["clients"])
    tokens = await make_identities(cluster.api_url, cluster.admin_token, folder,
                                   config["duration"], assignment)
    started = time.monotonic()
    history = History(folder / "history.jsonl", started)
    until = started + config["duration"]
    outcome: dict[str, Any] = {}
    try:
        async with subscribers(folder / "subscribers", started, cluster.nats_url,
                               cluster.api_url, config["stream"], config["prefix"],
                               cluster.admin_token) as received:
            keys = keys_of(config["keys"])
            locked = locked_keys(keys)
            clients = [Client(i, config["seed"], cluster.api_url, history, config["run_id"],
                              keys, tokens[name], ROLES[name], locked,
                              transport=cluster.transport_for(i), think=config["think"])
                       for i, name in enumerate(assignment)]
            tasks = [asyncio.create_task(c.run(until)) for c in clients]

            async def nemesis() -> None:
                for spec in config["schedule"]:
                    fault = Fault(**spec)
                    await asyncio.sleep(max(0.0, started + fault.at - time.monotonic()))
                    history.record("fault", phase="start", **fault.as_dict())
                    log.info("fault: %s %s for %.1fs", fault.kind, fault.target, fault.down)
                    try:
                        detail = await cluster.inject(fault)
                        history.record("fault", phase="end", kind=fault.kind,
                                       target=fault.target, detail=detail)
                    except Exception as e:
                        history.record("fault", phase="end", kind=fault.kind,
                                       target=fault.target, error=f"{type(e).__name__}: {e}")
                        log.error("fault %s failed: %s", fault.kind, e)

            nemesis_task = asyncio.create_task(nemesis())
            await asyncio.gather(*tasks)
            await nemesis_task
            history.record("clients_done", acknowledged=sum(c.acknowledged for c in clients))
            await asyncio.to_thread(cluster.heal)
            history.record("healed")
            outcome["broadcaster_caught_up"] = await _caught_up(
                cluster.database_url, cluster.api_url, received, timeout=180.0)
            history.record("caught_up", **outcome["broadcaster_caught_up"])
    finally:
        history.close()
    return outcome


async def _caught_up(database_url: str, api_url: str, received: dict[str, Any],
                     timeout: float) -> dict[str, Any]:
    """Wait (bounded) until the broadcaster's position, every asynchronous view and every
    subscriber reached the log's head (for its namespace); say who did."""
    import httpx
    import psycopg

    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                "SELECT coalesce(max(position), 0), coalesce((SELECT max(position) FROM"
                " broadcaster_positions), 0) FROM entry_history")
            row = await cur.fetchone()
            assert row is not None
            head, published = int(row[0]), int(row[1])
            cur = await conn.execute("SELECT namespace, max(position) FROM entry_history"
                                     " GROUP BY namespace")
            heads = {f"nats-{ns}": int(p) for ns, p in await cur.fetchall()}
            heads["sse"] = head
            behind = {name: {"received": r.last, "head": heads.get(name, 0)}
                      for name, r in received.items() if r.last < heads.get(name, 0)}
            try:
                async with httpx.AsyncClient(timeout=5.0) as http:
                    views = (await http.get(f"{api_url}/v1/health")).json()["views"]
                views_behind = {name: v["lag_events"] for name, v in views.items()
                                if v["lag_events"]}
            except (httpx.HTTPError, ValueError, KeyError) as e:
                views_behind = {"health": str(e)}
            state = {"head": head, "broadcaster": published, "behind": behind,
                     "views_behind": views_behind,
                     "ok": published >= head and not behind and not views_behind}
            if state["ok"] or time.monotonic() > deadline:
                return state
            await asyncio.sleep(0.25)


def _dump_log(database_url: str, path: Path) -> int:
    """The log as committed (the history copy, which ``ssot verify`` proves equal to the
    events' own rows), one event a line in position order."""
    import psycopg

    count = 0
    with psycopg.connect(database_url) as conn, path.open("w", encoding="utf-8") as out, \
            conn.cursor(name="chaos_log") as cur:
        cur.execute("SELECT position, namespace, key, version, event_type, event_id::text,"
                    " idempotency_key, document::text, resolution::text, recorded_at,"
                    " extract(epoch FROM recorded_at)::float8, actor, correlation_id,"
                    " auth::text FROM entry_history ORDER BY position")
        for row in cur:
            out.write(orjson.dumps({
                "p": row[0], "ns": row[1], "key": row[2], "v": row[3], "type": row[4],
                "id": row[5], "idem": row[6],
                "doc": orjson.loads(row[7]) if row[7] is not None else None,
                "resolution": orjson.loads(row[8]) if row[8] is not None else None,
                "at": row[9].isoformat(), "epoch": row[10], "actor": row[11],
                "corr": row[12],
                "auth": orjson.loads(row[13]) if row[13] is not None else None}).decode()
                + "\n")
            count += 1
    return count


def _dump_access_log(database_url: str, path: Path, settle: float = 30.0) -> int:
    """The access log, one row a line in seq order (``seq``, ``recorded_at``, ``record``),
    once no row came for a while: each HTTP worker appends what it queued every 0.1 s."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        deadline, last = time.monotonic() + settle, -1
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM access_log").fetchone()
            count = int(row[0]) if row else 0
            if count == last:
                break
            last = count
            time.sleep(0.5)
        with path.open("w", encoding="utf-8") as out:
            cur = conn.execute("SELECT seq, recorded_at, record FROM access_log ORDER BY seq")
            count = 0
            for seq, recorded_at, record in cur:
                out.write(orjson.dumps({"seq": seq, "recorded_at": recorded_at.isoformat(),
                                        "record": orjson.loads(record)}).decode() + "\n")
                count += 1
    return count


def _server_checks(cluster: Servers, config: dict[str, Any]) -> dict[str, Any]:
    """``ssot check``, ``ssot verify`` and ``ssot reconcile`` of the run's database and
    stream, through their modules."""
    from nexus_ssot.integrity.verify import ACCESS_KINDS, Options, verify
    from nexus_ssot.ledger.settings import Settings
    from nexus_ssot.projections.consistency import check

    from ..reconcile import reconcile

    settings = Settings(database_url=cluster.database_url, nats_url=cluster.nats_url,
                        nats_stream=config["stream"], nats_subject_prefix=config["prefix"],
                        kv_bucket_prefix=config["kv_prefix"])
    # At rest (clients stopped, views caught up): also the KV mirror's buckets.
    views = asyncio.run(check(cluster.database_url, settings=settings, external=True))
    verified = verify(cluster.database_url, Options())
    stream = asyncio.run(reconcile(cluster.database_url, cluster.nats_url,
                                   stream=config["stream"], prefix=config["prefix"]))
    return {
        "views": {"consistent": views.consistent, "report": views.as_dict()},
        "verify": {"ok": verified.ok, "report": verified.as_dict(20)},
        # the access log's chain, as verify checked it (None: it did not reach the head)
        "access_log": {"rows": verified.access_records,
                       "problems": [p.as_dict() for p in verified.problems
                                    if p.kind in ACCESS_KINDS][:50]},
        "stream": {"consistent": stream.consistent, "log_count": stream.log_count,
                   "stream_count": stream.stream_count, "missing": stream.missing[:50],
                   "duplicated": stream.duplicated[:50], "foreign": stream.foreign[:50]},
    }


def run(folder: Path, seed: int, duration: float, clients: int, keys: int, faults: bool,
        keep_data: bool, topology: str = "single", only: tuple[str, ...] = (), *,
        think: float) -> int:
    """One run into ``folder``; returns the exit code."""
    from nexus_ssot.ledger.settings import Settings

    from .checker import check_run, summary

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("nats").setLevel(logging.CRITICAL)  # the subscribers' reconnects
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    names = {"stream": f"CHAOS_{token.upper()}", "prefix": f"chaos_{token}",
             "kv_prefix": f"chaos{token}_", "database": f"ssot_chaos_{token}"}
    given = Settings()
    cluster: Servers | None = None
    try:
        if topology == "cluster":
            from .cluster_targets import ClusterTargets

            cluster = ClusterTargets(folder, names)
        else:
            cluster = Cluster(folder, names, given.database_url, given.nats_url)
        kinds = tuple(k for k in cluster.faultable if not only or k in only) if faults else ()
        plan = [f.as_dict() for f in schedule(seed, duration, kinds)]
        for fault in plan:  # a pause of a server the run did not start hits another
            if fault["kind"] == "pause" and fault["target"] not in cluster.pause_targets:
                fault["target"] = "api"
        skipped = sorted({"pg_fast", "pg_immediate", "restart_nats", "kill_nats"} - set(kinds)) \
            if faults and topology == "single" else []
        config = {"seed": seed, "duration": duration, "clients": clients, "think": think,
                  "keys": keys,
                  "run_id": f"chaos-{token}", "schedule": plan, "skipped_faults": skipped,
                  "api_url": cluster.api_url, "topology": topology, **names,
                  "embedded": {"postgres": not isinstance(cluster, Cluster)
                               or cluster.pg is not None,
                               "nats": not isinstance(cluster, Cluster)
                               or cluster.nats is not None}}
        (folder / "config.json").write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
        click.echo(f"chaos: seed {seed}, {duration:g} s, {clients} clients (think {think:g} s), "
                   f"{len(plan)} faults"
                   f"{' (skipped: ' + ', '.join(skipped) + ')' if skipped else ''}; "
                   f"run folder {folder}", err=True)
        cluster.start_services()
        outcome = asyncio.run(_exercise(cluster, folder, config))
        events = _dump_log(cluster.database_url, folder / "log.jsonl")
        access_rows = _dump_access_log(cluster.database_url, folder / "access_log.jsonl")
        server = {**_server_checks(cluster, config), **outcome, "events": events,
                  "access_log_rows": access_rows}
        (folder / "server.json").write_bytes(orjson.dumps(server, option=orjson.OPT_INDENT_2))
    except KeyboardInterrupt:
        click.echo("chaos: interrupted; stopping what was started", err=True)
        return EXIT_HARNESS
    except Exception as e:
        log.exception("the harness failed")
        click.echo(f"chaos: the harness failed: {type(e).__name__}: {e}", err=True)
        return EXIT_HARNESS
    finally:
        if cluster is not None:
            cluster.close(keep_data)
    report = check_run(folder)
    (folder / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    click.echo(summary(report))
    return 0 if report["ok"] else EXIT_ANOMALY

