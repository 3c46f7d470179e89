"""Each namespace's settings (its conflict policy, a description), kept as an entry of
the system namespace ``SETTINGS_NAMESPACE`` keyed by the namespace's name, so that they
have a history, an audit trail and preconditions like any entry."""

from __future__ import annotations

from typing import Any

from .commands import ConfigureNamespace, Expectation
from .documents import check_text, type_name
from .errors import InvalidInput, capped, quoted
from .events import EntryState

#: The system namespace where each namespace's settings are an entry keyed by its name.
#: Its leading ``_`` keeps it out of the namespaces a client can address.
SETTINGS_NAMESPACE = "_namespaces"

MERGE, STRICT, LAST_WRITER_WINS = "merge", "strict", "last-writer-wins"
CONFLICT_POLICIES = (MERGE, STRICT, LAST_WRITER_WINS)

#: The settings of a namespace that was never configured.
DEFAULT_SETTINGS: dict[str, Any] = {"conflict_policy": MERGE, "description": None}


def configure(namespace: str, settings: Any, expected: Expectation = Expectation()
              ) -> ConfigureNamespace:
    """The command that sets ``namespace``'s settings."""
    return ConfigureNamespace(SETTINGS_NAMESPACE, namespace, expected, settings=settings)


def check_settings(settings: Any) -> dict[str, Any]:
    """Validate a settings document; return it complete (defaults for what is missing)."""
    if not isinstance(settings, dict):
        raise InvalidInput(f"settings must be a JSON object, not {type_name(settings)}",
                           code="invalid_settings", field="settings")
    check_text(settings, "")  # first: the errors below quote member names
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise InvalidInput(
            f"unknown setting {quoted(unknown[0])}; the settings are "
            f"{', '.join(sorted(DEFAULT_SETTINGS))}",
            code="invalid_settings", field=capped(unknown[0]))
    policy = settings.get("conflict_policy", MERGE)
    if policy not in CONFLICT_POLICIES:
        raise InvalidInput(
            f"conflict_policy must be one of {', '.join(CONFLICT_POLICIES)}, "
            f"not {quoted(policy)}",
            code="invalid_settings", field="conflict_policy")
    description = settings.get("description")
    if description is not None and (not isinstance(description, str)
                                    or len(description) > 1024):
        raise InvalidInput("description must be text of at most 1024 characters, or null",
                           code="invalid_settings", field="description")
    return {"conflict_policy": policy, "description": description}


def settings_of(state: EntryState | None) -> dict[str, Any]:
    """A namespace's settings from the state of its settings entry (None: never set)."""
    if state is None or state.deleted or not isinstance(state.document, dict):
        return dict(DEFAULT_SETTINGS)
    return {**DEFAULT_SETTINGS, **state.document}
