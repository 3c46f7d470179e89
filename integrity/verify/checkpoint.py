"""Checkpoints of a verification: where a long run got to, written every N events and at
the end (atomically), so that a run stopped on the way resumes there with what it had
found (the problems, the Merkle frontier, the digest chain's head, the versions still
missing and the positions still to judge)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from nexus_ssot.ledger.errors import InvalidInput

from .. import merkle
from ..digests import Digest
from .inputs import parse_published_digest
from .problems import Problem

CHECKPOINT_FORMAT = "ssot-verify-checkpoint/1"


@dataclass
class Checkpoint:
    """Where a verification got to: everything before ``position`` is verified, with
    ``problems`` found (and ``problem_count``), the Merkle frontier of the log's first
    ``frontier.size`` events, the last digest checked, and the streams whose versions
    were missing at that point (``gaps``: stream id -> version -> position noticed)."""

    database: str
    namespace: str | None
    position: int
    events: int
    frontier: merkle.Frontier | None
    digest_seq: int | None
    digest_hash: bytes | None
    digest_signed: bool
    gaps: dict[str, dict[int, int]]
    problems: list[Problem]
    problem_count: int
    #: Positions some check doubted, judged at the end of the run.
    suspects: list[int]
    chain_suspects: dict[int, tuple[str, int]]
    #: The copies (history, current state) are compared after this position.
    copies_from: int
    #: Digests whose root differed from the log's, with why (judged at the end).
    root_mismatches: list[tuple[Digest, str, bool]]

    def as_json(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "database": self.database,
            "namespace": self.namespace,
            "position": self.position,
            "events": self.events,
            "frontier": None if self.frontier is None else {
                "size": self.frontier.size, "levels": self.frontier.levels,
                "nodes": [n.hex() for n in self.frontier.nodes]},
            "digest": None if self.digest_seq is None else {
                "seq": self.digest_seq,
                "hash": self.digest_hash.hex() if self.digest_hash else None,
                "signed": self.digest_signed},
            "gaps": {s: {str(v): p for v, p in g.items()} for s, g in self.gaps.items()},
            "problems": [p.as_dict() for p in self.problems],
            "problem_count": self.problem_count,
            "suspects": self.suspects,
            "chain_suspects": {str(p): [s, v] for p, (s, v) in self.chain_suspects.items()},
            "copies_from": self.copies_from,
            "root_mismatches": [{"digest": d.as_json(), "why": why, "published": published}
                                for d, why, published in self.root_mismatches],
        }

    def save(self, path: Path) -> None:
        """Write atomically (a crash leaves the previous checkpoint)."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps(self.as_json(), option=orjson.OPT_INDENT_2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        try:
            data = orjson.loads(path.read_bytes())
        except OSError as e:
            raise InvalidInput(f"checkpoint {str(path)!r} cannot be read: {e.strerror}",
                               code="invalid_checkpoint", field="checkpoint") from None
        except orjson.JSONDecodeError as e:
            raise InvalidInput(f"checkpoint {str(path)!r} is not JSON: {e}",
                               code="invalid_checkpoint", field="checkpoint") from None
        try:
            if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"format must be {CHECKPOINT_FORMAT!r}")
            frontier = data["frontier"]
            digest = data["digest"]
            checkpoint = cls(
                database=str(data["database"]),
                namespace=data["namespace"],
                position=int(data["position"]),
                events=int(data["events"]),
                frontier=None if frontier is None else merkle.Frontier(
                    size=int(frontier["size"]), levels=[int(v) for v in frontier["levels"]],
                    nodes=[bytes.fromhex(n) for n in frontier["nodes"]]),
                digest_seq=None if digest is None else int(digest["seq"]),
                digest_hash=None if digest is None or digest["hash"] is None
                else bytes.fromhex(digest["hash"]),
                digest_signed=bool(digest and digest.get("signed")),
                gaps={str(s): {int(v): int(p) for v, p in g.items()}
                      for s, g in data["gaps"].items()},
                problems=[Problem.from_dict(p) for p in data["problems"]],
                problem_count=int(data["problem_count"]),
                suspects=[int(p) for p in data["suspects"]],
                chain_suspects={int(p): (str(sv[0]), int(sv[1]))
                                for p, sv in data["chain_suspects"].items()},
                copies_from=int(data["copies_from"]),
                root_mismatches=[(parse_published_digest(m["digest"]), str(m["why"]),
                                  bool(m["published"])) for m in data["root_mismatches"]],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InvalidInput(f"checkpoint {str(path)!r} is not a verify checkpoint: {e!r}",
                               code="invalid_checkpoint", field="checkpoint") from None
        if checkpoint.position < 0 or (checkpoint.frontier is not None and (
                len(checkpoint.frontier.levels) != len(checkpoint.frontier.nodes))):
            raise InvalidInput(f"checkpoint {str(path)!r} is inconsistent",
                               code="invalid_checkpoint", field="checkpoint")
        return checkpoint

    @classmethod
    def resume(cls, path: Path | None, database: str, namespace: str | None,
               from_position: int | None) -> Checkpoint | None:
        """The checkpoint in ``path`` to resume from (None when there is no such file yet),
        checked to be of this ``database`` and ``namespace``; a ``from_position`` besides
        it is refused."""
        if path is None or not path.exists():
            return None
        if from_position is not None:
            raise InvalidInput("give either from_position or a checkpoint to resume from, "
                               f"not both ({str(path)!r} exists)", field="from_position",
                               code="invalid_position")
        checkpoint = cls.load(path)
        if checkpoint.database != database:
            raise InvalidInput(
                f"checkpoint {str(path)!r} is of database {checkpoint.database}, not "
                f"{database}", code="invalid_checkpoint", field="checkpoint")
        if checkpoint.namespace != namespace:
            raise InvalidInput(
                f"checkpoint {str(path)!r} verifies namespace {checkpoint.namespace!r}, "
                f"not {namespace!r}", code="invalid_checkpoint",
                field="namespace")
        return checkpoint
