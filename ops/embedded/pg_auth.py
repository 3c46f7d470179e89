"""Password authentication of the embedded PostgreSQL.

Every connection authenticates with SCRAM-SHA-256 (``pg_hba.conf``: ``scram-sha-256`` on
every line, as ``initdb --auth=scram-sha-256`` writes it); the superuser's password is made
by us and kept in ``<data_dir>/ssot-superuser.password`` (mode 0600, see
``secret_files``). A cluster made before passwords were required (``initdb --auth=trust``)
is moved over on its first start: the password is written to the file first, then set on
the role (as a SCRAM verifier computed here, so the password itself never reaches the
server's logs), then every ``trust`` line of ``pg_hba.conf`` becomes ``scram-sha-256`` and
the server reloads it. A start interrupted anywhere in between does it again on the next
start, with the password already in the file.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import psycopg
from psycopg import sql

from .pg_user import RunAs
from .processes import EmbeddedError
from .secret_files import write_owner_only

#: The superuser's password, in the data dir.
SECRET_NAME = "ssot-superuser.password"
SCRAM = "scram-sha-256"
_TRUST = re.compile(r"(?<!\S)trust(?!\S)")
#: A password file that is not there (libpq skips it quietly; /dev/null draws a warning).
_NO_PASSFILE = "/nonexistent/ssot-no-passfile"


def _code_and_comment(line: str) -> tuple[str, str]:
    code, hash_, comment = line.partition("#")
    return code, hash_ + comment


def hba_trusts(pgdata: Path) -> bool:
    """Whether some line of the cluster's pg_hba.conf lets a client in without a password."""
    text = (pgdata / "pg_hba.conf").read_text()
    return any(_TRUST.search(_code_and_comment(line)[0]) for line in text.splitlines())


def require_passwords(pgdata: Path, who: RunAs) -> None:
    """Make every ``trust`` line of pg_hba.conf ``scram-sha-256`` (the file is replaced
    whole: the server never reads half of it)."""
    path = pgdata / "pg_hba.conf"
    lines = []
    for line in path.read_text().splitlines(keepends=True):
        code, comment = _code_and_comment(line)
        lines.append(_TRUST.sub(SCRAM, code) + comment)
    write_owner_only(path, "".join(lines).encode(),
                     (who.uid, who.gid) if who.switch else None)


def set_role_password(trusted_url: str, user: str, password: str) -> None:
    """Give ``user`` ``password`` (over a connection the server still trusts) and have the
    server re-read pg_hba.conf."""
    with psycopg.connect(trusted_url, autocommit=True, connect_timeout=10) as conn:
        verifier = conn.pgconn.encrypt_password(password.encode(), user.encode(), SCRAM.encode())
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(user), sql.Literal(verifier.decode())))


def reload_configuration(url: str) -> None:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SELECT pg_reload_conf()")


def refuses_without_password(url_without_password: str) -> bool:
    """Whether the server asks for a password (none is offered: not from the environment,
    not from a password file)."""
    try:
        with psycopg.connect(url_without_password, password="", passfile=_NO_PASSFILE,
                             connect_timeout=5):
            return False
    except psycopg.OperationalError as error:
        if "password" in str(error).lower():
            return True
        raise


def wait_until_passwords_required(url_without_password: str, timeout: float) -> None:
    """Return once the server refuses a connection without a password (it reloads its
    configuration on its own time after pg_reload_conf)."""
    deadline = time.monotonic() + timeout
    while not refuses_without_password(url_without_password):
        if time.monotonic() >= deadline:
            raise EmbeddedError(
                f"PostgreSQL still lets clients in without a password {timeout:.0f} s after "
                "pg_hba.conf was changed to require one"
            )
        time.sleep(0.02)
