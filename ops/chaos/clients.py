"""The clients of ``ssot chaos``: writers and readers over HTTP, and the history they
record.

Each client runs a seeded random mix of writes (create, PUT with If-Match, merge patch,
JSON Patch, delete, revert, batch) and reads (current, at a version, as of a time, at a
position), one at a time. Every write carries an Idempotency-Key of its own and is
retried with the same key on a dropped connection, a timeout or a 5xx, as a careful
client would, until an answer or its deadline (then its outcome is unknown: ``info``).

The history (``history.jsonl``) holds one line per invocation (``invoke``), completion
(``complete``: outcome ``ok``, ``fail`` or ``info``) and fault, each with the runner's
monotonic time ``t`` (seconds since the run started) and the wall time ``wall``. Each
client has an identity (``identities``): an invocation names its ``subject``, and every
attempt sends an ``X-Correlation-Id`` of its own (``<run>-<op>.<attempt>``); a completion
names the one of the attempt it reports (``correlation_id``). Never a token.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson

STRICT_NS, MERGE_NS = "chaos-strict", "chaos-merge"
NAMESPACES = (STRICT_NS, MERGE_NS)
#: Seconds one attempt of a request may take, and one write with all its retries.
ATTEMPT_TIMEOUT, WRITE_DEADLINE = 8.0, 90.0
#: Every IMPATIENT-th client gives an attempt a fraction of a second and a write a few
#: seconds: its retries race the attempts still in flight under the same Idempotency-Key,
#: and some of its writes end with an outcome it never learns.
IMPATIENT, IMPATIENT_TIMEOUT, IMPATIENT_DEADLINE = 4, 0.3, 4.0
RETRIED_STATUS = frozenset({500, 502, 503, 504})
WRITES = ("create", "put", "merge_patch", "json_patch", "delete", "revert", "batch")
READS = ("read", "read_version", "read_as_of", "read_position", "read_written")
#: The mix: relative weights of the operations.
MIX = {"create": 6, "put": 20, "merge_patch": 12, "json_patch": 8, "delete": 4, "revert": 4,
       "batch": 6, "read": 18, "read_version": 8, "read_as_of": 7, "read_position": 7,
       "read_written": 7}
BATCH_MIX = {"put": 6, "patch": 3, "delete": 1}
#: Share of its operations a client spends trying what its identity may not do.
FORBIDDEN_SHARE = 0.06


@dataclass(frozen=True)
class Role:
    """What a client does with its identity (``identities``): the operation kinds and
    namespaces it is allowed, the kinds of batch operation it may use, whether it also
    touches the ``locked/…`` keys, and the ways it tries what it may not (``locked``: an
    operation on a locked key; ``write``: any write; ``elsewhere``: a write in a namespace
    it has no grant on; ``delete``; ``read``: any read)."""

    name: str
    ops: tuple[str, ...]
    namespaces: tuple[str, ...]
    batch: tuple[str, ...]
    locked: bool = False
    forbidden: tuple[str, ...] = ()


#: A client that may do everything (the run's administrator).
ANYTHING = Role("admin", tuple(MIX), NAMESPACES, tuple(BATCH_MIX), locked=True)


class History:
    """The run's history, one JSON object a line, flushed as it goes."""

    def __init__(self, path: Path, started: float) -> None:
        self.path = path
        self.started = started
        self._file: TextIO = path.open("a", encoding="utf-8")

    def record(self, record_type: str, /, **fields: Any) -> dict[str, Any]:
        line = {"type": record_type, "t": round(time.monotonic() - self.started, 6),
                "wall": time.time(), **fields}
        self._file.write(orjson.dumps(line).decode() + "\n")
        self._file.flush()
        return line

    def close(self) -> None:
        self._file.close()


def keys_of(count: int) -> list[str]:
    return [f"k{i:03d}" for i in range(count)]


def entry_path(ns: str, key: str) -> str:
    return f"/v1/namespaces/{ns}/entries/{key}"


class Client:
    """One client: a seeded stream of operations, each awaited before the next."""

    def __init__(self, number: int, seed: int, base_url: str, history: History, run_id: str,
                 keys: list[str], token: str, role: Role = ANYTHING,
                 locked: list[str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, *,
                 think: float) -> None:
        self.number = number
        self.think = think  # most seconds between two operations
        self.role = role
        self.locked = locked or []
        self.rng = random.Random(f"client:{seed}:{number}")
        self.impatient = number % IMPATIENT == IMPATIENT - 1
        self.http = httpx.AsyncClient(
            base_url=base_url, timeout=IMPATIENT_TIMEOUT if self.impatient else ATTEMPT_TIMEOUT,
            limits=httpx.Limits(max_connections=4), transport=transport,
            headers={"Authorization": f"Bearer {token}"})
        self.history = history
        self.run_id = run_id
        self.keys = keys
        self.count = 0
        self.known: dict[tuple[str, str], int] = {}  # last version seen of each entry
        self.positions: list[int] = []  # positions this client's writes returned
        self.acknowledged = 0

    async def run(self, until: float) -> None:
        ops = [op for op in MIX if op in self.role.ops]
        weights = [MIX[op] for op in ops]
        try:
            while time.monotonic() < until:
                way = None
                if self.role.forbidden and self.rng.random() < FORBIDDEN_SHARE:
                    way = self.rng.choice(self.role.forbidden)
                    op = self._forbidden_op(way)
                else:
                    op = self.rng.choices(ops, weights)[0]
                await self.one(op, way)
                await asyncio.sleep(self.rng.uniform(0.0, self.think))
        finally:
            await self.http.aclose()

    def _forbidden_op(self, way: str) -> str:
        """An operation that tries what the client's identity may not do, ``way``."""
        if way == "delete":
            return "delete"
        kinds = {"locked": tuple(MIX), "read": READS, "write": WRITES,
                 "elsewhere": tuple(op for op in self.role.ops if op in WRITES)}[way]
        return self.rng.choices(kinds, [MIX[op] for op in kinds])[0]

    def _entry(self, way: str | None = None) -> tuple[str, str]:
        """An entry to work on: one the client's identity may use, or (``way``) one it
        may not."""
        if way == "elsewhere":
            ns = next((n for n in NAMESPACES if n not in self.role.namespaces), STRICT_NS)
        else:
            ns = self.rng.choice(self.role.namespaces)
        if way == "locked" or (self.role.locked and self.locked and self.rng.random() < 0.05):
            return ns, self.rng.choice(self.locked)
        return ns, self.rng.choice(self.keys)

    def _if_match(self, ns: str, key: str) -> int | None:
        known = self.known.get((ns, key), 0)
        return known if known and self.rng.random() < 0.7 else None

    def _document(self, op_id: str) -> dict[str, Any]:
        return {"client": self.number, "op": op_id, "r": self.rng.randrange(1_000_000),
                "tags": self.rng.sample(["a", "b", "c", "d", "e"], self.rng.randint(0, 3))}

    async def one(self, op: str, way: str | None = None) -> None:
        """One operation, ``way`` naming how it tries what the identity may not do."""
        self.count += 1
        op_id = f"c{self.number}-{self.count}"
        ns, key = self._entry(way)
        headers: dict[str, str] = {}
        body: Any = None
        method, path = "GET", entry_path(ns, key)
        params: dict[str, Any] | None = None
        content_type = "application/json"
        if_match = self._if_match(ns, key) if op in WRITES else None
        if if_match is not None and op not in ("create", "batch"):
            headers["If-Match"] = f'"{if_match}"'
        if op == "create":
            method, body = "PUT", self._document(op_id)
            headers["If-None-Match"] = "*"
        elif op == "put":
            method, body = "PUT", self._document(op_id)
        elif op == "merge_patch":
            method, content_type = "PATCH", "application/merge-patch+json"
            body = {f"m{self.number}": op_id, "r": self.rng.randrange(1_000_000),
                    **({"tags": None} if self.rng.random() < 0.2 else {})}
        elif op == "json_patch":
            method, content_type = "PATCH", "application/json-patch+json"
            body = [{"op": "add", "path": f"/j{self.number}", "value": op_id}]
        elif op == "delete":
            method = "DELETE"
        elif op == "revert":
            known = self.known.get((ns, key), 0)
            method, path = "POST", path + "/revert"
            body = {"to_version": self.rng.randint(1, max(1, known))}
        elif op == "batch":
            method, path, ns, key = "POST", "/v1/batch", "", ""
            size = self.rng.randint(2, 4)
            bad = self.rng.randrange(size) if way else -1  # the operation it may not do
            body = {"operations": [self._batch_op(op_id, i, way if i == bad else None)
                                   for i in range(size)]}
        elif op == "read_version":
            params = {"version": self.rng.randint(1, max(1, self.known.get((ns, key), 1)))}
        elif op == "read_as_of":
            # a third of them at "just now", where a commit in flight may race the read
            draw = self.rng.random()
            ago = self.rng.uniform(0.0, 5.0) if draw < 0.67 else \
                self.rng.uniform(0.0, 0.02) if draw < 0.85 else 0.0
            moment = datetime.now(UTC) - timedelta(seconds=ago)
            params = {"as_of": moment.isoformat()}
        elif op in ("read_position", "read_written"):  # at a position, or one including it
            if not self.positions:
                op, params = "read", None
            else:
                name = "position" if op == "read_position" else "min_position"
                params = {name: self.rng.choice(self.positions[-20:])}
        write = op in WRITES
        if write:
            headers["Idempotency-Key"] = f"{self.run_id}-{op_id}"
        content = orjson.dumps(body) if body is not None else None
        if content is not None:
            headers["Content-Type"] = content_type
        self.history.record("invoke", op=op_id, client=self.number, kind=op, ns=ns, key=key,
                            method=method, path=path, params=params, body=body,
                            if_match=if_match if "If-Match" in headers else None,
                            idempotency_key=headers.get("Idempotency-Key"),
                            subject=self.role.name, forbidden=way)
        outcome, status, answer, attempts, errors, correlation_id = await self._send(
            f"{self.run_id}-{op_id}", method, path, params, headers, content, write)
        self.history.record("complete", op=op_id, client=self.number, outcome=outcome,
                            status=status, answer=answer, attempts=attempts,
                            errors=errors[-5:], correlation_id=correlation_id)
        if outcome == "ok" and isinstance(answer, dict):
            self._learn(answer)
            if write:
                self.acknowledged += 1
        elif outcome == "fail" and isinstance(answer, dict) and ns:
            latest = answer.get("latest_version") or answer.get("current_version") \
                or answer.get("deleted_version")
            if isinstance(latest, int):
                self.known[(ns, key)] = latest

    def _batch_op(self, op_id: str, index: int, way: str | None) -> dict[str, Any]:
        ns, key = self._entry(way)
        kinds = {None: self.role.batch, "delete": ("delete",),
                 "elsewhere": ("put", "patch")}.get(way) or tuple(BATCH_MIX)
        kind = self.rng.choices(kinds, [BATCH_MIX[k] for k in kinds])[0]
        op: dict[str, Any] = {"op": kind, "namespace": ns, "key": key}
        if kind == "put":
            op["document"] = self._document(f"{op_id}.{index}")
        elif kind == "patch":
            op["patch"] = {f"b{self.number}": f"{op_id}.{index}"}
        known = self.known.get((ns, key), 0)
        if known and self.rng.random() < 0.3:
            op["if_match"] = known
        return op

    def _learn(self, answer: dict[str, Any]) -> None:
        items = answer.get("operations") or [answer]
        for item in items:
            if isinstance(item, dict) and "namespace" in item and "version" in item:
                address = (item["namespace"], item["key"])
                self.known[address] = max(self.known.get(address, 0), int(item["version"]))
                if isinstance(item.get("position"), int):
                    self.positions.append(item["position"])
        del self.positions[:-100]

    async def _send(self, request_id: str, method: str, path: str,
                    params: dict[str, Any] | None, headers: dict[str, str],
                    content: bytes | None, write: bool
                    ) -> tuple[str, int | None, Any, int, list[str], str | None]:
        """(outcome, status, body, attempts, errors, the answered attempt's correlation
        id): retried with the same request, each attempt with a correlation id of its own
        (``<request_id>.<attempt>``)."""
        deadline = time.monotonic() + (IMPATIENT_DEADLINE if self.impatient else
                                       WRITE_DEADLINE if write else 20.0)
        attempts, pause = 0, 0.05
        errors: list[str] = []
        status: int | None = None
        while True:
            attempts += 1
            correlation_id = f"{request_id}.{attempts}"
            try:
                response = await self.http.request(
                    method, path, params=params, content=content,
                    headers={**headers, "X-Correlation-Id": correlation_id})
                status = response.status_code
                if status not in RETRIED_STATUS:
                    try:
                        answer = response.json()
                    except ValueError:
                        answer = response.text[:200]
                    if isinstance(answer, dict) and response.headers.get("Idempotent-Replayed"):
                        answer["_replayed"] = True
                    return (("ok" if status < 300 else "fail"), status, answer, attempts,
                            errors, correlation_id)
                errors.append(f"{status} {response.text[:120]}")
            except httpx.HTTPError as e:
                errors.append(f"{type(e).__name__}: {str(e)[:120]}")
            if time.monotonic() + pause > deadline:
                return "info", status, None, attempts, errors, None
            await asyncio.sleep(pause)
            pause = min(1.0, pause * 2)
