"""``ssot access``: identity and access on the command line. ``ssot access nats-config``
prints the nats-server ``authorization`` block rendered from the access policy and the API
tokens (``access/nats_config.py``, read as ``ops/nats_authorization.py`` says)."""

from __future__ import annotations

from pathlib import Path

import click

from .console import EXIT_OTHER, EXIT_UNAVAILABLE, fail
from .database import operator_settings


@click.group()
def access() -> None:
    """Identity and access: policies, tokens, and what NATS lets each token do."""


@access.command("nats-config")
@click.option("--namespaces", metavar="NS1,NS2",
              help="Expand namespace globs against these namespaces (default: the "
              "namespaces in the database).")
@click.option("--service-user", metavar="NAME",
              help="Add this user with every permission (the broadcaster's, the KV "
              "mirror's): the server's authorization block must hold it.")
@click.option("--service-password-file", type=click.Path(dir_okay=False, path_type=Path),
              help="The service user's password (its bcrypt hash goes in the block).")
def nats_config(namespaces: str | None, service_user: str | None,
                service_password_file: Path | None) -> None:
    """Print the nats-server authorization block for the API tokens: one NATS user per
    live token (user = token id, password = the token), allowed to read the namespaces its
    identity may read whole, and to publish nothing into the ledger's subjects.

    Talks to PostgreSQL directly (SSOT_DATABASE_URL, or that of the running ssot serve of
    the data dir); the subjects, stream and KV buckets are those of
    SSOT_NATS_SUBJECT_PREFIX, SSOT_NATS_STREAM and SSOT_KV_BUCKET_PREFIX. Include the
    output in the server's configuration and reload it (nats-server --signal reload).
    Namespace globs match only the namespaces existing when rendered: render again
    when namespaces are added (ssot serve does it on its own for its embedded NATS)."""
    import bcrypt
    import psycopg

    from nexus_ssot.ledger.redaction import redact_url

    from .nats_authorization import read_access, render_access

    if (service_user is None) != (service_password_file is None):
        raise click.UsageError("give --service-user and --service-password-file together")
    settings = operator_settings()
    service: tuple[str, str] | None = None
    if service_user is not None and service_password_file is not None:
        try:
            password = service_password_file.read_text().strip()
        except OSError as e:
            fail(EXIT_OTHER, "unreadable", f"{service_password_file}: {e.strerror}")
        if not password:
            fail(EXIT_OTHER, "empty_password", f"{service_password_file} is empty")
        service = (service_user, bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode())
    given = None if namespaces is None else sorted(
        {n.strip() for n in namespaces.split(",") if n.strip()})
    try:
        with psycopg.connect(str(settings.database_url), connect_timeout=10) as conn:
            records = read_access(conn)
    except psycopg.OperationalError as e:
        fail(EXIT_UNAVAILABLE, "unreachable", f"the database: {redact_url(str(e).strip())}")
    click.echo(render_access(records, settings, service_user=service, namespaces=given),
               nl=False)
