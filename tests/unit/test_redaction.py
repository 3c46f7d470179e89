"""redact_url: no password of a URL or connection string survives into what is printed."""

from __future__ import annotations

import psycopg
import pytest

from nexus_ssot.ledger.redaction import redact_url


@pytest.mark.parametrize(("given", "shown"), [
    ("postgresql://ssot:s3cr-et_X@127.0.0.1:5432/ssot",
     "postgresql://ssot:***@127.0.0.1:5432/ssot"),
    ("postgres://u:p%40ss@db.example:5432/x?sslmode=require",
     "postgres://u:***@db.example:5432/x?sslmode=require"),
    ("postgresql://db/ssot?user=u&password=s3cret&sslmode=disable",
     "postgresql://db/ssot?user=u&password=***&sslmode=disable"),
    ("dbname=ssot host=127.0.0.1 password=s3cret port=5432 user=ssot",
     "dbname=ssot host=127.0.0.1 password=*** port=5432 user=ssot"),
    ("host=db password = 'it\\'s a \\\\ secret' user=x", "host=db password = *** user=x"),
    ("host=db sslpassword=keypass", "host=db sslpassword=***"),
    ("nats://ssot:s3cret@127.0.0.1:4222", "nats://ssot:***@127.0.0.1:4222"),
    ("nats://s3cret-token@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
    ("tls://a:b@n1:4222,tls://a:b@n2:4222", "tls://a:***@n1:4222,tls://a:***@n2:4222"),
    ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
    ("postgresql://ssot@127.0.0.1:5432/postgres", "postgresql://ssot@127.0.0.1:5432/postgres"),
    ("http://127.0.0.1:8080/v1/health", "http://127.0.0.1:8080/v1/health"),
    ("", ""),
])
def test_passwords_are_replaced_and_nothing_else(given: str, shown: str) -> None:
    assert redact_url(given) == shown


def test_urls_inside_a_message_are_redacted_too() -> None:
    message = ('connection failed: missing "=" after "postgresql://u:hunter2@h/db" in '
               "connection info string; KV mirror at nats://svc:hunter3@127.0.0.1:1: closed")
    redacted = redact_url(message)
    assert "hunter2" not in redacted and "hunter3" not in redacted
    assert "postgresql://u:***@h/db" in redacted and "nats://svc:***@127.0.0.1:1" in redacted


def test_an_email_address_in_text_is_left_alone() -> None:
    assert redact_url("ask ops@example.com") == "ask ops@example.com"


def test_a_quoted_password_made_by_psycopg_is_redacted_whole() -> None:
    conninfo = psycopg.conninfo.make_conninfo(host="db", password="it's a \\ s3cret", user="x")
    assert redact_url(conninfo) == "host=db password=*** user=x"
