"""Each namespace's settings (its conflict policy, whether its schema's ``format``
asserts or annotates, a description), kept as an entry of
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

#: What ``format`` does in the namespace's schema: "annotate" (the draft 2020-12 default:
#: a value is not checked against its format) or "assert" (a value that is not of its
#: format, or a format the validator does not know, violates the schema).
ANNOTATE, ASSERT = "annotate", "assert"
SCHEMA_FORMATS = (ANNOTATE, ASSERT)

#: The settings of a namespace that was never configured. (``schema_format`` is shown
#: only once set, so the settings of namespaces that never set it read as they always did.)
DEFAULT_SETTINGS: dict[str, Any] = {"conflict_policy": MERGE, "description": None}
SETTING_NAMES = ("conflict_policy", "description", "schema_format")


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
    unknown = sorted(set(settings) - set(SETTING_NAMES))
    if unknown:
        raise InvalidInput(
            f"unknown setting {quoted(unknown[0])}; the settings are "
            f"{', '.join(SETTING_NAMES)}",
            code="invalid_settings", field=capped(unknown[0]))
    policy = _one_of(settings, "conflict_policy", CONFLICT_POLICIES)
    schema_format = _one_of(settings, "schema_format", SCHEMA_FORMATS)
    description = settings.get("description")
    if description is not None and (not isinstance(description, str)
                                    or len(description) > 1024):
        raise InvalidInput("description must be text of at most 1024 characters, or null",
                           code="invalid_settings", field="description")
    checked = {"conflict_policy": policy, "description": description}
    if "schema_format" in settings:
        checked["schema_format"] = schema_format
    return checked


def _one_of(settings: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    """The setting ``name`` (the first of ``choices`` when not given), one of them."""
    value = settings.get(name, choices[0])
    if value not in choices:
        raise InvalidInput(f"{name} must be one of {', '.join(choices)}, not {quoted(value)}",
                           code="invalid_settings", field=name)
    return str(value)


def settings_of(state: EntryState | None) -> dict[str, Any]:
    """A namespace's settings from the state of its settings entry (None: never set)."""
    if state is None or state.deleted or not isinstance(state.document, dict):
        return dict(DEFAULT_SETTINGS)
    return {**DEFAULT_SETTINGS, **state.document}


def asserts_formats(settings: dict[str, Any]) -> bool:
    """Whether ``format`` asserts in the schema of the namespace with ``settings``."""
    return bool(settings.get("schema_format", ANNOTATE) == ASSERT)
