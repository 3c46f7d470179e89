"""``make bench``: the ledger's throughput beside its baselines, measured in one run
(``python -m nexus_ssot.ops.bench``; the whole run is ``run``).

Steps, all against the same PostgreSQL server (``SSOT_DATABASE_URL``, or an embedded one
started for the run) and a database ``ssot_bench_<hex>`` created for the run and dropped at
its end, one module each:

(a) ``pgbench``: a one-row INSERT per transaction, 8 clients, 2 threads (raw PostgreSQL).
(b) ``library``: the plain ``eventsourcing`` library, one event per ``save()`` from 8
    threads.
(c)-(e) ``http_load``: our HTTP API in its own process (``ssot serve``, ``server``):
    read-modify-write PUTs with ``If-Match`` at 1, 16 and 64 connections, GET of one entry
    at 16 connections, the server's resident memory once 100k writes have been
    acknowledged. This server runs with auth on (``SSOT_AUTH=on``, every request with
    the administrator's token, no default rate limit), as do the steps after it that use
    it; (p) measures what auth adds.
(r) ``budget``: ms of CPU per write for each kind of process of the server (HTTP
    workers, writer, the supervisor's follower threads) at writer batches of 1 and ~16,
    per GET, and the idle server's CPU, against their targets.
(s) ``baseline``: a trivial FastAPI endpoint under uvicorn with serve's options, GET @16.
(t) ``etcd``: a one-node etcd on loopback (when installed), PUT @16/@64 and GET @16
    through its v3 JSON gateway.
(l) ``chain``: the hash chain's cost, the server's writer in the load generator's process
    with the chain on and off batch by batch.
(f)-(h) ``broadcast``: raw JetStream beside the ledger's broadcaster.
(i)-(k) ``history``: time travel and audit over a log of 1M events.
(m)-(n) ``projections``: view rebuilds beside the plain library's log read, and the live
    lag of an asynchronous view.
(o) ``backup``: verify, export and import of a 200k-event log.
(p) ``auth`` (``auth_micro``, ``auth_http``): identity and access with 1,000 policy rules,
    in process (a token, a decision, a listing's filter: p50/p99 in µs) and over HTTP
    (PUT@16 and GET@16 against two servers of the same build, auth off and auth on,
    taking turns), once the server under test has stopped.
(q) ``slowloris``: GETs of one entry on a few connections, alone and beside 200 slow
    clients that never finish their request head (the server's head timeout cuts them
    off): the ordinary requests' p99 stays under 100 ms.

``--only history``, ``--only chain``, ``--only projections``, ``--only backup``,
``--only auth``, ``--only slowloris``, ``--only budget`` and ``--only baselines`` run just
those steps.

The HTTP load generator runs in a separate process on raw asyncio streams (uvloop,
hand-written HTTP/1.1 keep-alive requests): the machine may have two cores shared by the
server, PostgreSQL and the generator, so the generator must stay cheap. Each step also
records where the CPU went (server, PostgreSQL, generator, anything else) from /proc, so a
reader can tell what limited it (``measuring``); the steps that need a big log seed it
through the ledger's writer and wait for a quiet system first (``seeding``).

Results (``report``): ``<out>/bench-<UTC timestamp>.json`` and ``.md``, copied to
``latest.json`` and ``latest.md`` (not for an ``--only`` run, nor for a noisy one: a step
during which other processes used more than 15 % of a core is NOISY, not PASS); the
markdown table is printed at the end, progress goes to stderr.
"""
