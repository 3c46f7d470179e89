"""Each event's own hash and each stream's chain: versions 1, 2, 3… in log order, each
``prev_hash`` the previous event's ``hash``. The scan follows every stream (inlined there
for speed) in ``heads``, ``gaps`` and ``chain_suspects``; what they leave is judged here,
with the history copy saying which field changed."""

from __future__ import annotations

from nexus_ssot.ledger.stored_state import MEMBERS, form_problem

from .log import (
    RESTORED,
    Conn,
    Event,
    Heads,
    History,
    differences,
    event_at,
    history_at,
    history_of,
    position_of,
)
from .problems import (
    CHAIN_BROKEN,
    EVENT_ALTERED,
    EVENT_MISSING,
    EVENTS_REORDERED,
    UNCHAINED_EVENT,
    UNSEALED_EVENT,
    Findings,
    Problem,
    show,
)

#: The class versions whose events carry a hash (the chain came with version 3).
_CHAINED_VERSIONS = tuple(v for v in MEMBERS if v >= 3)


class StreamChecks:
    """The streams' chains as the scan found them: each stream's last version and stored
    hash (``heads``), its versions still missing with the position they were noticed at
    (``gaps``), and the events whose ``prev_hash`` is not their predecessor's hash
    (``chain_suspects``, judged at the end)."""

    def __init__(self, conn: Conn, findings: Findings) -> None:
        self.conn = conn
        self.report = findings.report
        self.heads: Heads = {}
        self.gaps: dict[str, dict[int, int]] = {}
        self.chain_suspects: dict[int, tuple[str, int]] = {}

    def examine_hash(self, event: Event) -> bool:
        """Off the fast path: whether the event's state is exactly the writer's bytes for
        its members, they give its stored hash, and (before class version 5) its seal
        holds; if not, report how it was altered (or that it is unchained or unsealed)."""
        stored = event.stored_hash
        restored = event.event_type == RESTORED
        form = form_problem(event.state, restored) if event.error is None else None
        if event.error is None and form is None and isinstance(stored, str) \
                and event.recomputed() == stored \
                and (event.sealed_intact() or (event.whole and event.seal is None)):
            return True
        history = history_at(self.conn, event.position)
        namespace = event.namespace or (history.namespace if history else None)
        key = event.key or (history.key if history else None)
        if event.error is not None:
            self.report(Problem(EVENT_ALTERED, event.position, event.error,
                                namespace=namespace, key=key, version=event.version,
                                field="state"))
            return False
        if stored is None:
            if history is not None and history.members["hash"] is not None:
                self.report(Problem(
                    EVENT_ALTERED, event.position,
                    f"its state has no hash, but its history copy has "
                    f"{history.members['hash']}: the hash was removed",
                    namespace=namespace, key=key, version=event.version, field="hash"))
            else:
                self.report(Problem(
                    UNCHAINED_EVENT, event.position,
                    "the event carries no hash (written with SSOT_HASH_CHAIN=false or "
                    "before the chain): nothing vouches for its content",
                    namespace=namespace, key=key, version=event.version))
            return False
        if form is not None:
            self.report(Problem(EVENT_ALTERED, event.position, form[1], namespace=namespace,
                                key=key, version=event.version, field=form[0]))
            return False
        if event.recomputed() != stored:
            field, detail = self._altered_content(event, history)
            self.report(Problem(EVENT_ALTERED, event.position, detail, namespace=namespace,
                                key=key, version=event.version, field=field))
            return False
        if event.seal is None:
            self.report(Problem(
                UNSEALED_EVENT, event.position,
                f"the event (class version {event.get('class_version')}) has no seal: its "
                "hash leaves out its timestamp and class_version, and nothing else vouches "
                "for them (its seal was deleted, or a writer older than the upgrade "
                "appended it since)", namespace=namespace, key=key, version=event.version))
            return False
        fields = [f for f in differences(event, history, in_order=True) if f != "hash"]
        if fields:
            why = (f": its {', '.join(fields)} differ(s) from the history copy in the order "
                   "of their members")
        elif event.whole:
            why = ""
        else:
            why = (" although the members its hash covers are intact: what changed is what "
                   f"its class version ({event.get('class_version')}) does not hash — its "
                   "timestamp or class_version — or the order of members inside a value")
        self.report(Problem(EVENT_ALTERED, event.position,
                            "its stored bytes are not the ones sealed" + why,
                            namespace=namespace, key=key, version=event.version,
                            field=fields[0] if fields else "state"))
        return False

    def _altered_content(self, event: Event, history: History | None
                         ) -> tuple[str | None, str]:
        """The field that changed in an event whose members no longer give its hash, and
        a sentence saying so."""
        stored = event.stored_hash
        fields = differences(event, history)
        if fields:
            return fields[0], (f"its {', '.join(fields)} differ(s) from the history copy; "
                               f"its content no longer hashes to {show(stored)}")
        was = next((v for v in _CHAINED_VERSIONS if v != event.get("class_version")
                    and event.recomputed(class_version=v) == stored), None)
        if was is not None:
            return "class_version", (f"its class_version was {was}, not "
                                     f"{event.get('class_version')}: its content hashes to "
                                     f"{show(stored)} as version {was}")
        if history is None:
            return None, (f"its content no longer hashes to {show(stored)}, and it has no "
                          "history copy to say which field changed")
        if event.whole:
            return "timestamp", (
                f"its content no longer hashes to {show(stored)}, and every member the "
                "history copies agrees with it: what changed is the one member only the "
                "event holds, its timestamp (or both copies were rewritten)")
        return None, (f"its content no longer hashes to {show(stored)}; the history copy "
                      "agrees with the altered state: both were rewritten")

    def version_behind(self, stream: str, version: int, position: int, head: int,
                       namespace: str | None) -> None:
        pending = self.gaps.get(stream, {})
        noticed = pending.pop(version, None)
        if not pending:
            self.gaps.pop(stream, None)
        event = event_at(self.conn, position)
        key = event.key if event is not None else None
        if noticed is not None:
            self.report(Problem(
                EVENTS_REORDERED, noticed,
                f"a later version of this stream stands at position {noticed}, before "
                f"version {version} at position {position}", namespace=namespace,
                key=key, version=version, other_position=position))
        else:
            self.report(Problem(
                CHAIN_BROKEN, position,
                f"version {version} comes after version {head} of the same stream",
                namespace=namespace, key=key, version=version))

    def finish(self) -> None:
        """Versions still missing at the end, and links that broke."""
        for _stream, pending in sorted(self.gaps.items()):
            for version, noticed in sorted(pending.items()):
                event = event_at(self.conn, noticed)
                namespace = event.namespace if event else None
                key = event.key if event else None
                history = history_of(self.conn, namespace, key, version) \
                    if namespace is not None and key is not None else None
                if history is not None:
                    self.report(Problem(
                        EVENT_MISSING, history.position,
                        f"version {version} is not in the log; its history copy records it "
                        f"at position {history.position} ({history.event_type} by "
                        f"{history.members['actor']})", namespace=namespace, key=key,
                        version=version))
                else:
                    self.report(Problem(
                        EVENT_MISSING, noticed,
                        f"version {version} is not in the log (nor in the history); the "
                        f"stream goes on at position {noticed}", namespace=namespace,
                        key=key, version=version))
        for position, (stream, version) in sorted(self.chain_suspects.items()):
            event = event_at(self.conn, position)
            before = position_of(self.conn, stream, version - 1)
            previous = event_at(self.conn, before) if before is not None else None
            if previous is not None:
                history = history_at(self.conn, previous.position)
                if history is not None and history.version == previous.version \
                        and history.members["hash"] != previous.stored_hash:
                    fields = [f for f in differences(previous, history) if f != "hash"]
                    self.report(Problem(
                        EVENT_ALTERED, previous.position,
                        "it was rewritten with a recomputed hash: its "
                        f"{', '.join(fields) or 'content'} differ(s) from the history copy, "
                        f"and version {version} still links to the original hash",
                        namespace=previous.namespace, key=previous.key,
                        version=previous.version, field=fields[0] if fields else "hash"))
                    continue
            self.report(Problem(
                CHAIN_BROKEN, position,
                f"its prev_hash {show(event.get('prev_hash') if event else None)} is not "
                f"the hash of version {version - 1} "
                f"({show(previous.stored_hash if previous else None)})",
                namespace=event.namespace if event else None,
                key=event.key if event else None, version=version))
