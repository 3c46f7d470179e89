"""One serve per data dir (its lock) and the record of where its servers are
(ops/instance.py), on files in a temporary folder; the processes are in
tests/integration/test_instance.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nexus_ssot.ledger.errors import PreconditionFailed, Unavailable
from nexus_ssot.ledger.settings import Settings
from nexus_ssot.ops.instance import RECORD_NAME, claimed, find, http_url

PG = "postgresql://ssot:pw@127.0.0.1:5999/ssot"
NATS = "nats://ssot:pw@127.0.0.1:4999"


def embedded(data_dir: Path, **settings: object) -> Settings:
    """Settings of a serve that embeds both servers in ``data_dir``."""
    return Settings(**{"data_dir": data_dir, "database_url": None, "nats_url": None,
                       "http_port": 8090, **settings})


def ready(settings: Settings) -> Settings:
    """The same, once its embedded servers are up."""
    return settings.model_copy(update={"database_url": PG, "nats_url": NATS})


def test_the_record_says_where_the_servers_are_while_the_serve_runs(tmp_path: Path) -> None:
    data = tmp_path / ".ssot"
    settings = embedded(data)
    with claimed(settings) as claim:
        assert find(data) is None  # held, but its servers are not up yet
        with claim.recorded(ready(settings)):
            running = find(data)
            assert running is not None
            assert (running.pid, running.url, running.database_url, running.nats_url) == (
                os.getpid(), "http://127.0.0.1:8090", PG, NATS)
            assert (data / RECORD_NAME).stat().st_mode & 0o777 == 0o600
        assert find(data) is None  # a clean stop removes it
    assert data.stat().st_mode & 0o777 == 0o700


def test_a_second_claim_is_refused_naming_the_serve_that_holds_the_data_dir(
        tmp_path: Path) -> None:
    with claimed(embedded(tmp_path)), pytest.raises(PreconditionFailed) as refused, \
            claimed(embedded(tmp_path, http_port=8092), patience=0):
        pass
    assert refused.value.code == "already_serving"
    assert refused.value.message.startswith(
        f"the data dir {tmp_path} is in use by ssot serve (pid {os.getpid()}, "
        "http://127.0.0.1:8090)")
    with claimed(embedded(tmp_path), patience=0):  # free again once the first is done
        pass


def test_a_record_nobody_holds_is_stale_and_the_next_serve_replaces_it(
        tmp_path: Path) -> None:
    with claimed(embedded(tmp_path)) as claim, claim.recorded(ready(embedded(tmp_path))):
        left = (tmp_path / RECORD_NAME).read_text()
    (tmp_path / RECORD_NAME).write_text(left)  # as a killed serve leaves it
    with pytest.raises(Unavailable) as stale:
        find(tmp_path)
    assert stale.value.code == "not_running"
    assert "is not running (it stopped without removing its record" in stale.value.message
    with claimed(embedded(tmp_path)):
        assert not (tmp_path / RECORD_NAME).exists()


def test_a_record_that_is_not_one_is_refused(tmp_path: Path) -> None:
    (tmp_path / RECORD_NAME).write_text(json.dumps({"pid": 1}))
    with pytest.raises(Unavailable, match="is not a record of ssot serve"):
        find(tmp_path)


def test_a_serve_with_both_urls_embeds_nothing_and_holds_nothing(tmp_path: Path) -> None:
    given = Settings(data_dir=tmp_path, database_url=PG, nats_url=NATS)
    with claimed(given) as first, claimed(given) as second, second.recorded(given):
        assert not (first.held or second.held)
        assert find(tmp_path) is None
        with claimed(embedded(tmp_path), patience=0):  # the data dir stays free
            pass


@pytest.mark.parametrize(("host", "tls", "url"), [
    ("127.0.0.1", False, "http://127.0.0.1:8090"),
    ("0.0.0.0", False, "http://127.0.0.1:8090"),
    ("::", True, "https://[::1]:8090"),
    ("localhost", True, "https://localhost:8090"),
])
def test_the_url_is_where_a_client_here_reaches_the_api(host: str, tls: bool,
                                                        url: str) -> None:
    tls_files = {"tls_cert": Path("c.pem"), "tls_key": Path("k.pem")} if tls else {}
    settings = Settings(http_host=host, http_port=8090, **tls_files)
    assert http_url(settings) == url
